"""What an output folder already holds, against this sweep's config: each run file's
state (missing, unreadable, done, or of another config), the error naming the differing
keys of foreign run files, and the check that a folder's combined cube would lose no runs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ntkbench.sweep._config import expand_grid, run_name


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


_MISSING = object()


def _show(value: Any) -> str:
    return "(absent)" if value is _MISSING else json.dumps(value)


def _config_diff(old: Any, new: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (old value, new value) of every leaf where two configs differ."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        diff: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(old) | set(new), key=str):
            a, b = old.get(key, _MISSING), new.get(key, _MISSING)
            if isinstance(a, Mapping) and isinstance(b, Mapping):
                diff.update(_config_diff(a, b, f"{prefix}{key}."))
            elif a != b:
                diff[f"{prefix}{key}"] = (a, b)
        return diff
    return {} if old == new else {prefix.rstrip(".") or "config": (old, new)}


def _run_state(path: Path, run_config: Mapping[str, Any]) -> tuple[str, Any]:
    """``("missing" | "unreadable" | "done" | "foreign", the file's config or None)``.

    ``done``: the file opens as a cube of the same config; ``foreign``: it opens but holds
    another config (written by a different sweep); ``unreadable``: a corrupted or
    truncated file (recomputed without asking)."""
    from ntkbench import cube

    if not path.exists():
        return "missing", None
    try:
        ds = cube.open(path)
    except (ValueError, OSError):
        return "unreadable", None
    try:
        stored = json.loads(ds.attrs["config"])
    except (KeyError, ValueError, TypeError):
        return "unreadable", None
    return ("done" if stored == _jsonable(run_config) else "foreign"), stored


def _foreign_error(out: Path, foreign: Sequence[tuple[Path, Any, Mapping[str, Any]]]) -> ValueError:
    diff: dict[str, tuple[Any, Any]] = {}
    for _path, stored, run in foreign:
        for key, values in _config_diff(stored, _jsonable(run)).items():
            diff.setdefault(key, values)
    keys = "; ".join(f"{k} (folder: {_show(a)}, this config: {_show(b)})" for k, (a, b) in diff.items())
    names = ", ".join(p.name for p, _, _ in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    return ValueError(
        f"out folder {str(out)!r} holds {len(foreign)} run file(s) of a different config ({names}); "
        f"differing keys: {keys}. Use another out folder, or overwrite=True (CLI: --overwrite) to start over "
        "and recompute them"
    )


def _check_combined_cube(target: Path, cfg: Mapping[str, Any], paths: Sequence[Path]) -> None:
    """Refuse a folder whose ``cube.nc`` this sweep would replace with a cube that loses
    runs: one combined from another config (other non-grid keys), or from grid points this
    config leaves out (two sweeps with disjoint grids in one folder). A larger grid of the
    same config (more seeds) only adds runs and is accepted; an unreadable file is rewritten."""
    from ntkbench import cube

    if not target.is_file():
        return
    try:
        with cube.open(target) as ds:
            stored = json.loads(ds.attrs["config"])
    except (ValueError, OSError, KeyError, TypeError):
        return
    new = _jsonable(cfg)
    if not isinstance(stored, dict):
        return
    diff = _config_diff({k: v for k, v in stored.items() if k != "grid"}, {k: v for k, v in new.items() if k != "grid"})
    if diff:
        keys = "; ".join(f"{k} (cube.nc: {_show(a)}, this config: {_show(b)})" for k, (a, b) in diff.items())
        raise ValueError(
            f"out folder {str(target.parent)!r} holds a cube.nc of a different config; differing keys: {keys}. "
            "Use another out folder, or overwrite=True (CLI: --overwrite) to replace it"
        )
    try:
        old_names = {run_name(r["grid"]) for r in expand_grid(stored, validate=False)}
    except Exception:  # noqa: BLE001 - a config this version cannot expand: treat as foreign
        old_names = {"?"}
    lost = sorted(old_names - {p.name for p in paths})
    if lost:
        names = ", ".join(lost[:3]) + (f" and {len(lost) - 3} more" if len(lost) > 3 else "")
        raise ValueError(
            f"out folder {str(target.parent)!r} holds a cube.nc combining {len(lost)} run(s) this config's grid "
            f"leaves out ({names}; cube.nc grid: {_show(stored.get('grid', _MISSING))}, this config: "
            f"{_show(new.get('grid', _MISSING))}); rewriting it would drop them. Use another out folder, a grid "
            "that includes them, or overwrite=True (CLI: --overwrite) to replace it"
        )
