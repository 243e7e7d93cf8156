"""Live sweeps: each run's progress file (written after every recording), the stop file
that asks live runs to stop (:func:`request_stop`), the sweep so far as one cube
(:func:`live_cube`) and the progress bar's line of the latest measures (``_LiveStatus``)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ntkbench.sweep._config import (
    RECORD_DEFAULTS,
    TRAIN_DEFAULTS,
    _resolve_grid_key,
    expand_grid,
    run_name,
    validate_config,
)

if TYPE_CHECKING:
    from ntkbench.sweep._loop import _Progress


#: a file in the output folder that asks the runs of a live sweep to stop after their
#: current recording (:func:`request_stop`; seen by dask workers on a shared file system too)
STOP_FILE = ".ntkbench-stop"


class RunStopped(Exception):
    """A run stopped after a recording because its sweep was asked to stop."""


def request_stop(out: str | os.PathLike[str]) -> None:
    """Ask a live sweep writing to ``out`` (in this process, another one, or on dask
    workers) to stop after the current recording of each run in progress; finished runs
    stay, a rerun resumes."""
    folder = Path(out)
    if folder.is_dir():
        (folder / STOP_FILE).touch()


def live_path(path: Path) -> Path:
    """The progress file of run file ``path`` while it runs live: ``.<name>.live.json``."""
    return path.with_name(f".{path.name}.live.json")


def _live_writer(run_config: Mapping[str, Any], path: Path):
    """``on_record`` of a live run: after each recording, atomically rewrite the run's
    progress file (its grid point, the steps so far and every measure's values), then stop
    the run if its folder holds the stop file."""
    import numpy as np

    point = {}
    for axis, value in (run_config.get("grid") or {}).items():
        point[_resolve_grid_key(axis, run_config)[1]] = value
    live, stop = live_path(path), path.parent / STOP_FILE
    record: dict[str, Any] = {"point": point, "steps": [], "values": {}}

    def on_record(step: int, values: Mapping[str, Any]) -> None:
        record["steps"].append(int(step))
        for name, v in values.items():
            record["values"].setdefault(name, []).append(np.asarray(v, dtype=float).tolist())
        tmp = live.with_name(f"{live.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, allow_nan=True))
        os.replace(tmp, live)
        if stop.exists():
            raise RunStopped(f"{path.name}: stopped after step {step}")

    return on_record


def _record_steps(run: Mapping[str, Any]) -> list[int]:
    """The steps at which a run records (its Recorder's schedule)."""
    from ntkbench.train import Recorder

    tr = {**TRAIN_DEFAULTS, **run.get("train", {})}
    rec = {**RECORD_DEFAULTS, **run.get("record", {})}
    every = rec["every"]
    recorder = Recorder(every=tuple(every) if isinstance(every, list) else every, log_points=rec["log_points"])
    return [int(v) for v in recorder.steps(int(tr["steps"]))]


_LIVE_FILES: dict = {}  # finished run file -> (mtime, its values): live_cube reads each once


def live_cube(config: Mapping[str, Any], out: str | os.PathLike[str]) -> Any:
    """The sweep of ``config`` in ``out`` so far, as one cube on its full grid and record
    schedule: finished run files, and the progress files of runs in progress (a sweep run
    with ``live=True``); what has not been recorded yet is NaN. None before the first
    recording. Cheap enough to poll (a finished run file is read once).
    """
    import numpy as np
    import xarray as xr

    from ntkbench import cube

    cfg = validate_config(config)
    runs = expand_grid(cfg, validate=False)
    folder = Path(out)
    grid: dict[str, list[Any]] = {}
    for axis, values in (cfg.get("grid") or {}).items():
        grid[_resolve_grid_key(axis, cfg)[1]] = list(values)
    steps = sorted({s for run in runs for s in _record_steps(run)})
    pieces = []  # (grid point, steps, {name: values (n_steps, ...)})
    for run in runs:
        path = folder / run_name(run["grid"])
        point = {_resolve_grid_key(a, cfg)[1]: v for a, v in (run.get("grid") or {}).items()}
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime is not None:
            hit = _LIVE_FILES.get(path)
            if hit is None or hit[0] != mtime:
                try:
                    ds = cube.open(path).isel({d: 0 for d in point})
                except (ValueError, OSError):
                    continue
                values = {
                    str(k): np.asarray(v.values, dtype=float) for k, v in ds.data_vars.items() if "step" in v.dims
                }
                _LIVE_FILES[path] = hit = (mtime, ([int(v) for v in ds["step"].values], values))
            pieces.append((point, *hit[1]))
            continue
        try:
            record = json.loads(live_path(path).read_text())
        except (FileNotFoundError, ValueError):
            continue
        values = {k: np.asarray(v, dtype=float) for k, v in record["values"].items()}
        pieces.append((point, record["steps"], values))
    if not pieces:
        return None
    index = {s: i for i, s in enumerate(steps)}
    n_eig = max((v.shape[1] for _, _, vals in pieces for v in vals.values() if v.ndim == 2), default=0)
    names = list(dict.fromkeys(k for _, _, vals in pieces for k in vals))
    shape = tuple(len(v) for v in grid.values())
    data_vars = {}
    for name in names:
        eig = any(vals.get(name, np.zeros((0, 0))).ndim == 2 for _, _, vals in pieces)
        arr = np.full((*shape, len(steps), *((n_eig,) if eig else ())), np.nan)
        for point, got_steps, vals in pieces:
            if name not in vals:
                continue
            at = tuple(grid[d].index(point[d]) for d in grid)
            v = vals[name]
            for j, st in enumerate(got_steps):
                if st in index:
                    if eig:
                        arr[at + (index[st], slice(0, v.shape[1]))] = v[j]
                    else:
                        arr[at + (index[st],)] = v[j]
        dims = (*grid, "step", *(("eigen_index",) if eig else ()))
        data_vars[name] = (dims, arr.astype(np.float32), cube.var_attrs(name))
    coords: dict[str, Any] = {d: (d, np.asarray(v), cube.var_attrs(d)) for d, v in grid.items()}
    coords["step"] = ("step", np.asarray(steps, dtype=np.int64), cube.var_attrs("step"))
    if n_eig:
        coords["eigen_index"] = ("eigen_index", np.arange(n_eig, dtype=np.int64), cube.var_attrs("eigen_index"))
    attrs = cube.make_attrs(cfg, paper=cfg.get("paper", ""), title=cfg.get("title", ""))
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


class _LiveStatus:
    """``--live``: every ``every`` seconds, the progress bar's postfix shows the latest
    recording of each run in progress (read from the progress files, so dask workers'
    runs show too): ``width=64-seed=1 step 30: loss 0.41 entropy 2.31 | ...``."""

    SHOW = ("loss", "test_loss", "entropy", "trace", "chi_pos")

    def __init__(self, state: _Progress, out: Path, every: float = 0.5) -> None:
        self.state, self.out, self.every = state, out, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="ntkbench-sweep-live")
        self._thread.start()

    def line(self) -> str:
        parts = []
        for live in sorted(self.out.glob(".run-*.live.json")):
            try:
                record = json.loads(live.read_text())
            except (OSError, ValueError):
                continue
            if not record.get("steps"):
                continue
            values = record["values"]
            shown = [
                f"{k} {values[k][-1]:.4g}" for k in self.SHOW if k in values and not isinstance(values[k][-1], list)
            ]
            parts.append(f"{live.name[5 : -len('.nc.live.json')]} step {record['steps'][-1]}: {' '.join(shown)}")
        return " | ".join(parts)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            text = self.line()
            if text:
                self.state.bar.set_postfix_str(text, refresh=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
