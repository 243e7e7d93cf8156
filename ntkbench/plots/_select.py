"""Reading a cube for a figure: its measures and axis labels, the check that it holds a
variable, and the selections and reductions (seed, step, width, drawable points) the cube
figures' ``*_data`` functions make."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ntkbench._types import SeedSel


def label(ds: Any, name: str) -> str:
    """Axis label ``"long_name [units]"`` of a variable or coordinate (units 1 are omitted)."""
    if name not in ds.variables:
        return name
    attrs = ds[name].attrs
    text = str(attrs.get("long_name", name))
    units = str(attrs.get("units", "")).strip()
    if units and units not in ("1", "-", "dimensionless"):
        text += f" [{units}]"
    return text


def measures(ds: Any) -> list[str]:
    """Names of the per-step scalar measures in a cube (variables with a ``step`` dim and
    without ``eigen_index``), in cube order."""
    return [
        str(k)
        for k, v in ds.data_vars.items()
        if "step" in v.dims and "eigen_index" not in v.dims and np.issubdtype(v.dtype, np.number)
    ]


def check_cube(ds: Any, var: str | None = None) -> None:
    """``TypeError`` unless ``ds`` is an ``xarray.Dataset``; ``ValueError`` naming the
    variables it has unless ``var`` (if given) is one of them."""
    import xarray as xr

    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"ds must be an xarray.Dataset (a result cube), got {type(ds).__name__}")
    if var is not None and var not in ds.data_vars:
        raise ValueError(f"variable {var!r} is not in the cube; it has {sorted(map(str, ds.data_vars))}")


def _select_seed(da: Any, seed: SeedSel) -> tuple[Any, Any]:
    """Reduce the ``seed`` dim: ``"mean"`` → (mean, std); an int → (that seed, None)."""
    if "seed" not in da.dims:
        return da, None
    if isinstance(seed, str):
        if seed != "mean":
            raise ValueError(f"seed must be 'mean' or a seed value, got {seed!r}")
        std = da.std("seed") if da.sizes["seed"] > 1 else None
        return da.mean("seed"), std
    if seed not in da["seed"].values:
        raise ValueError(f"seed {seed!r} is not in the cube; seeds are {da['seed'].values.tolist()}")
    return da.sel(seed=seed), None


def _drop_extra(da: Any, keep: Sequence[str]) -> Any:
    """Take the first value along any swept dim not in ``keep`` (depth, lr, n_train, …)."""
    extra = [d for d in da.dims if d not in keep]
    return da.isel({d: 0 for d in extra}) if extra else da


def _resolve_step(ds: Any, step: int | None) -> int:
    """A step value of the cube: ``None`` or a negative int count from the end (-1 = last),
    otherwise the nearest recorded step."""
    steps = ds["step"].values
    if step is None:
        return int(steps[-1])
    if not isinstance(step, (int, np.integer)):
        raise TypeError(f"step must be an int step value (or negative position), got {step!r}")
    if step < 0:
        if -step > len(steps):
            raise ValueError(f"step {step} out of range for {len(steps)} recorded steps")
        return int(steps[step])
    return int(steps[np.abs(steps - step).argmin()])


def _resolve_widths(ds: Any, widths: int | Sequence[int] | None) -> list:
    if "width" not in ds.dims:
        return [None]
    all_w = ds["width"].values.tolist()
    if widths is None:
        return all_w
    if isinstance(widths, (int, np.integer)):
        widths = [int(widths)]
    bad = [w for w in widths if w not in all_w]
    if bad:
        raise ValueError(f"widths {bad} are not in the cube; widths are {all_w}")
    return [w for w in all_w if w in set(widths)]  # cube order


def finite_mask(x: np.ndarray, y: np.ndarray, log_x: bool, log_y: bool) -> np.ndarray:
    """Points that can be drawn: finite, and positive on a log axis."""
    ok = np.isfinite(x) & np.isfinite(y)
    if log_x:
        ok &= x > 0
    if log_y:
        ok &= y > 0
    return ok


def _finished(ds: Any) -> Any:
    from ntkbench.cube import finished

    return finished(ds)
