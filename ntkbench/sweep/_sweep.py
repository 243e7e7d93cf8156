"""The sweep: :func:`sweep` checks the config and the output folder, runs what is left
(in-process here, or on dask in ``_dask``), waits for runs another sweep holds, and
combines the run files into one cube."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ntkbench.sweep import _run as _run_module
from ntkbench.sweep._config import _is_int, _resolve_grid_key, expand_grid, run_name, validate_config
from ntkbench.sweep._dask import _run_distributed
from ntkbench.sweep._folder import _check_combined_cube, _foreign_error, _run_state
from ntkbench.sweep._live import STOP_FILE, RunStopped, _LiveStatus
from ntkbench.sweep._locks import _holder, _read_lock, _remove_temp_files, _RunLocks
from ntkbench.sweep._loop import _claim, _CtrlC, _Progress
from ntkbench.sweep._run import check_runs

_POLL = 0.25  # seconds between looks at locks another sweep holds


def sweep(
    config: Mapping[str, Any],
    out: str | os.PathLike[str],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    progress: bool = True,
    overwrite: bool = False,
    live: bool = False,
    combined: str = "cube.nc",
):
    """Run every grid point of ``config``, one file per run under ``out``; combine them.

    Parameters
    ----------
    config : the sweep config (see the module docs); validated first.
    out : output folder; gets ``run-<axis>=<value>-....nc`` files and ``cube.nc``.
    workers : run on a ``dask.distributed.LocalCluster`` with this many single-threaded
        worker processes, listening on 127.0.0.1 only (:func:`local_cluster`).
    scheduler : address of an existing dask scheduler (``"tcp://host:port"``), e.g. a
        cluster over several machines (``dask scheduler`` and ``dask worker ADDRESS`` on
        each; the output folder must be on a file system they all share).
    client : an existing ``dask.distributed.Client``. At most one of ``workers``,
        ``scheduler`` and ``client``; none runs in-process.
    progress : show a ``tqdm.auto`` progress bar (terminal or notebook).
    live : each run writes a progress file after every recording (:func:`live_cube` reads
        the sweep so far, e.g. for a notebook's live Explorer or ``ntkbench sweep --live``)
        and stops after its current recording when :func:`request_stop` is called; the
        sweep then raises :class:`SweepInterrupted` and a rerun resumes.
    combined : file name (in ``out``) of the combined cube. Two sweeps that share one
        folder's run files (different grids over the same runs, as a paper's experiments
        do) each name their own, so neither replaces the other's cube.
    overwrite : start over where ``out`` holds run files of a different config. Without it
        such a folder is refused (``ValueError`` naming the differing config keys) before
        anything runs; with it those runs are recomputed and their files replaced. Runs of
        the same config are reused either way.

    Returns
    -------
    The combined cube (``xarray.Dataset``) with the grid axes as dims, also written to
    ``out/<combined>`` (``out/cube.nc``). Rerunning skips finished runs (resume).

    Safety
    ------
    - Every file is written atomically (a killed sweep leaves complete files or none), and
      a corrupted or truncated run file is recomputed.
    - Each run is locked while it runs (``.<run file>.lock``: pid, host; refreshed every
      ``LOCK_HEARTBEAT`` s), so two sweeps on one folder (two terminals, a terminal and a
      notebook, two dask clients) never run the same run: the second skips the runs the
      first holds, saying so, runs the others, then waits for the held ones and picks up
      their results; the final cube equals a single sweep's. A lock whose process is gone
      (same host) or without a heartbeat for ``LOCK_STALE_AFTER`` s (another host) is
      stale and taken over; a run left unfinished by the other sweep is run here.
    - In the main thread (in-process or on dask): Ctrl-C stops after the run(s) in progress
      (queued dask runs are cancelled) and raises :class:`SweepInterrupted` (a
      ``KeyboardInterrupt``) saying how to resume; a second Ctrl-C stops at once.
    - A folder whose ``cube.nc`` combines another config, or grid points this config
      leaves out (two sweeps with disjoint grids), is refused unless ``overwrite``: the
      new cube would replace it and lose runs. A larger grid of the same config is fine.

    >>> cube = sweep(cfg, "runs/demo", workers=2)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    cfg = validate_config(config)
    given = [name for name, v in (("workers", workers), ("scheduler", scheduler), ("client", client)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of workers, scheduler and client; got {given}")
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if scheduler is not None and not isinstance(scheduler, str):
        raise TypeError(f"scheduler must be an address string like 'tcp://host:port', got {scheduler!r}")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    if not isinstance(live, bool):
        raise TypeError(f"live must be True or False, got {live!r}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    if not isinstance(combined, str) or not combined.endswith(".nc") or Path(combined).name != combined:
        raise ValueError(f"combined must be a file name ending in .nc (no folder), got {combined!r}")
    if combined.startswith(("run-", ".")):
        raise ValueError(f"combined must not start with 'run-' or '.' (run files and locks), got {combined!r}")
    # Absolute: dask workers on an existing cluster have their own working directory (the
    # folder must be on a file system the workers share).
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} is a file; expected a folder (new or of this sweep)")
    above = next(p for p in out.parents if p.exists())
    if not out.exists() and not above.is_dir():
        raise ValueError(f"out: {str(out)!r} lies under the file {str(above)!r}; expected a folder")

    runs = expand_grid(cfg, validate=False)
    paths = [out / run_name(r["grid"]) for r in runs]
    if len(set(paths)) != len(paths):  # pragma: no cover - distinct values give distinct names
        raise ValueError("grid: two grid points map to the same file name")
    states = [_run_state(p, r) for r, p in zip(runs, paths, strict=True)]
    foreign = [(p, st[1], r) for r, p, st in zip(runs, paths, states, strict=True) if st[0] == "foreign"]
    if foreign and not overwrite:
        raise _foreign_error(out, foreign)
    if not overwrite:
        _check_combined_cube(out / combined, cfg, paths)
    pending = [(r, p) for r, p, st in zip(runs, paths, states, strict=True) if st[0] != "done"]
    check_runs([r for r, _ in pending])  # fail before creating folders or clusters
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"out: cannot create the folder {str(out)!r} ({exc.strerror}); expected a writable folder"
        ) from exc

    in_process = client is None and workers is None and scheduler is None
    bar = tqdm(total=len(runs), initial=len(runs) - len(pending), desc="sweep", unit="run", disable=not progress)
    state = _Progress(bar, out, len(runs), len(runs) - len(pending), live=live)
    (out / STOP_FILE).unlink(missing_ok=True)  # a stop asked of an earlier sweep
    locks = _RunLocks()
    for path in [*paths, out / combined]:
        locks.clear_stale(path)
    shown = _LiveStatus(state, out) if live and progress else None
    try:
        with _CtrlC(state.say) as ctrl_c:
            state.ctrl_c = ctrl_c
            todo = pending
            while todo:
                if in_process:
                    held = _run_in_process(todo, locks, state)
                else:
                    held = _run_distributed(todo, locks, state, workers=workers, scheduler=scheduler, client=client)
                if not held:
                    break
                todo = _wait_for_others(held, locks, state)
        result = _combine(cfg, paths, out / combined, locks, state)
    finally:
        if shown is not None:
            shown.close()
        bar.close()
        locks.close()
        if live:
            (out / STOP_FILE).unlink(missing_ok=True)
    return result


def _run_in_process(todo: list, locks: _RunLocks, state: _Progress) -> list:
    """Run ``todo`` one by one, each under its lock; return the runs another sweep holds."""
    held: list = []
    for run, path in todo:
        state.check_interrupt()
        if not _claim(run, path, locks, state, held):
            continue
        try:
            state.bar.set_postfix_str(path.stem[4:] or "run", refresh=True)
            try:
                # looked up on its module at each call (both run loops do), so a test
                # replacing ``ntkbench.sweep._run._run_to_file`` replaces it for both
                result = _run_module._run_to_file(run, str(path), *state.live_args)
            except RunStopped:
                state.check_interrupt()  # raises SweepInterrupted
                raise
            state.finished(path, result)
        finally:
            locks.release(path)
    return held


def _wait_for_others(held: list, locks: _RunLocks, state: _Progress) -> list:
    """Wait until a run another sweep holds is released (or its lock goes stale)."""
    names = ", ".join(p.name for _, p in held)
    state.say(f"waiting for {len(held)} run(s) another sweep is running: {names}")
    while True:
        for _run, path in held:
            info = _read_lock(locks.path(path))
            if info is None or locks.stale(info):
                return held
        state.check_interrupt()
        time.sleep(_POLL)


def _diverged_runs(paths: list[Path]) -> dict[str, int]:
    """``{run file name: diverged step}`` of the runs whose training diverged."""
    import xarray as xr

    from ntkbench import cube

    out = {}
    for p in paths:
        with cube.IO_LOCK, xr.open_dataset(p, engine="netcdf4") as ds:
            if "diverged_step" in ds.attrs:
                out[p.name] = int(ds.attrs["diverged_step"])
    return out


def _combine(cfg: Mapping[str, Any], paths: list[Path], target: Path, locks: _RunLocks, state: _Progress):
    """Combine the run files into ``target`` (under its lock: one writer at a time)."""
    from ntkbench import cube

    while (info := locks.acquire(target)) is not None:
        if target not in state.announced:
            state.announced.add(target)
            state.say(f"waiting for another sweep ({_holder(info)}) to finish writing {target.name}")
        time.sleep(_POLL)
    try:
        _remove_temp_files(target)
        attrs = cube.make_attrs(cfg, paper=cfg.get("paper", ""), title=cfg.get("title", ""))
        # run files written before the status variables existed get them from their attrs
        combined = cube.combine([cube.with_status(cube.open(p)) for p in paths], attrs=attrs)
        diverged = _diverged_runs(paths)
        if diverged:
            combined.attrs["diverged_runs"] = json.dumps(diverged)
        # combine_by_coords sorts coordinates; lay named axes (method, activation) out in the
        # grid's order, numbers stay ascending
        for key, values in cfg.get("grid", {}).items():
            _, dim = _resolve_grid_key(key, cfg)
            named = dim in combined.dims and combined[dim].dtype.kind in "OUS"
            if named and sorted(map(str, values)) == sorted(map(str, combined[dim].values.tolist())):
                combined = combined.reindex({dim: values})
        cube.save(combined, target)
    finally:
        locks.release(target)
    return combined
