"""Public testing helpers (xarray style): synthetic result cubes for plots, widgets and docs,
and a comparison of two result cubes that tolerates another CPU's round-off.

The cubes follow the result-cube schema of :mod:`ntkbench.cube` exactly (dims, coordinates,
variable attributes, provenance), so code that consumes cubes
(plots, widgets, the CLI export) can be developed and tested without training anything.

Example
-------
>>> from ntkbench.testing import synthetic_cube
>>> ds = synthetic_cube(widths=(16, 64), seeds=(0, 1), steps=(0, 10, 100), n_eigen=8)
>>> dict(ds.sizes)
{'width': 2, 'seed': 2, 'step': 3, 'eigen_index': 8}
>>> float(ds.trace.isel(width=0, seed=0, step=0)) > 0
True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

__all__ = ["assert_cubes_close", "synthetic_cube"]


def _variables() -> dict[str, tuple[str, str]]:
    from ntkbench.cube import VARIABLES

    return dict(VARIABLES)


def synthetic_cube(
    widths: Sequence[int] = (16, 64, 256),
    seeds: Sequence[int] | None = (0, 1, 2),
    steps: Sequence[int] = (0, 10, 30, 100, 300, 1000),
    n_eigen: int = 32,
    seed: int = 0,
):
    """A plausible result cube with power-law eNTK spectra and consistent measures.

    Eigenvalues follow ``c · (i + 1) ** -alpha`` with a decay ``alpha`` that grows during
    training (compression) and shrinks with width (lazier wide networks), times a small
    log-normal noise, sorted descending. ``entropy``, ``trace`` and ``effective_rank`` are
    computed from those eigenvalues (the ``n_eigen`` values are the whole spectrum), so the
    cube is self-consistent. Losses decay with step, faster for wider networks; the kernel
    change since initialization grows with step and falls like ``width ** -0.5``.

    Parameters
    ----------
    widths, steps:
        Coordinates of the ``width`` and ``step`` dims (ascending positive / non-negative ints).
    seeds:
        Coordinates of the ``seed`` dim, or ``None`` for a cube without a seed dim.
    n_eigen:
        Length of the ``eigen_index`` dim (>= 2).
    seed:
        Seed of the noise.

    Returns
    -------
    xarray.Dataset with dims ``(width, [seed,] step, eigen_index)``.
    """
    import xarray as xr

    width_values = np.asarray(widths, dtype=np.int64)
    step_values = np.asarray(steps, dtype=np.int64)
    if width_values.ndim != 1 or width_values.size == 0 or np.any(width_values <= 0):
        raise ValueError(f"widths must be a non-empty sequence of positive ints, got {width_values!r}")
    if step_values.ndim != 1 or step_values.size == 0 or np.any(step_values < 0):
        raise ValueError(f"steps must be a non-empty sequence of non-negative ints, got {step_values!r}")
    if not isinstance(n_eigen, (int, np.integer)) or n_eigen < 2:
        raise ValueError(f"n_eigen must be an int >= 2, got {n_eigen!r}")
    seed_values = None if seeds is None else np.asarray(seeds, dtype=np.int64)
    rng = np.random.default_rng(seed)

    n_seed = 1 if seed_values is None else seed_values.size
    W = width_values[:, None, None].astype(float)
    S = step_values[None, None, :].astype(float)
    t = np.log1p(S) / np.log1p(max(float(step_values.max()), 1.0))  # 0 … 1 along training
    alpha = 1.0 + 0.6 * t * (64.0 / (W + 64.0)) + 0.02 * rng.standard_normal((len(width_values), n_seed, 1))
    scale = 2.0 * np.sqrt(W / 16.0) * (1.0 + 0.5 * t)
    rank = np.arange(1, n_eigen + 1, dtype=float)
    noise = np.exp(0.05 * rng.standard_normal((len(width_values), n_seed, len(step_values), n_eigen)))
    eig = scale[..., None] * rank ** -alpha[..., None] * noise
    eig = -np.sort(-eig, axis=-1)  # descending, eigen_index 0 = largest

    p = eig / eig.sum(-1, keepdims=True)
    entropy = -(p * np.log(p)).sum(-1)
    trace = eig.sum(-1)
    rate = 3e-3 * np.sqrt(W / 16.0)
    jitter = np.exp(0.05 * rng.standard_normal((len(width_values), n_seed, len(step_values))))
    loss = 2.3 * np.exp(-rate * S) * jitter + 0.02
    test_loss = loss * 1.1 + 0.05 * (1 - np.exp(-rate * S))
    accuracy = 1.0 - 0.9 * np.exp(-rate * S) * jitter
    test_accuracy = accuracy - 0.05 * (1 - np.exp(-rate * S))
    rel_change = 0.8 * t * (W / 16.0) ** -0.5 * jitter
    distance = 0.3 * t * (W / 16.0) ** -0.5 * jitter

    dims = ("width", "seed", "step")
    values = {
        "eigenvalues": (dims + ("eigen_index",), eig),
        "entropy": (dims, entropy),
        "trace": (dims, trace),
        "effective_rank": (dims, np.exp(entropy)),
        "loss": (dims, loss),
        "test_loss": (dims, test_loss),
        "accuracy": (dims, accuracy),
        "test_accuracy": (dims, test_accuracy),
        "kernel_distance_init": (dims, distance),
        "relative_change_init": (dims, rel_change),
    }
    table = _variables()
    data_vars = {}
    for name, (d, v) in values.items():
        long_name, units = table.get(name, (name, "1"))
        data_vars[name] = xr.Variable(d, v.astype(np.float64), {"long_name": long_name, "units": units})
    coords = {
        "width": ("width", width_values, {"long_name": "network width", "units": "1"}),
        "seed": ("seed", np.arange(1) if seed_values is None else seed_values, {"long_name": "seed"}),
        "step": ("step", step_values, {"long_name": "optimizer step", "units": "1"}),
        "eigen_index": ("eigen_index", np.arange(n_eigen), {"long_name": "eigenvalue index (0 = largest)"}),
    }
    config = {
        "kind": "synthetic",
        "widths": width_values.tolist(),
        "seeds": None if seed_values is None else seed_values.tolist(),
        "steps": step_values.tolist(),
        "n_eigen": int(n_eigen),
        "seed": int(seed),
    }
    try:
        from importlib.metadata import version

        jax_version = version("jax")
    except Exception:  # pragma: no cover
        jax_version = ""
    from ntkbench import __version__

    ds = xr.Dataset(
        data_vars,
        coords=coords,
        attrs={
            "ntkbench_version": __version__,
            "jax_version": jax_version,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": json.dumps(config),
            "paper": "",
            "title": "synthetic eNTK cube",
        },
    )
    if seed_values is None:
        ds = ds.isel(seed=0, drop=True)
    return ds


def assert_cubes_close(
    actual, desired, *, rtol: float = 1e-5, atol: float = 1e-5, attrs: bool = False, values: bool = True
) -> None:
    """Assert two result cubes hold the same runs, up to floating-point round-off.

    The structure must agree exactly: dims, coordinates (the grid, steps, eigen indices),
    variable names, dtypes and the NaN pattern. Floating-point values ``a`` (actual) and
    ``d`` (desired) of a variable must satisfy, element-wise,

        |a - d| <= atol * max|d| + rtol * |d|

    with ``max|d|`` over the whole variable: the absolute part scales with the variable's
    own magnitude, so a value near zero (a small eigenvalue, an entropy change) is judged
    against its variable's scale, not against 1. Other values (integers, strings, flags)
    must be equal.

    Why not ``xarray.testing.assert_equal``: XLA compiles other kernels on another
    instruction set (AVX-512 vs AVX2), so a float32 run repeated on another CPU differs in
    its last bits; an exact comparison with a cube made elsewhere fails on some machines.
    The defaults (rtol 1e-5, atol 1e-5 of the scale) are far above that spread (see
    ``tests/README.md``, measured for the shipped quick cubes) and far below any change a
    code edit makes to the numbers.

    ``attrs=True`` also compares the attributes, except the provenance that differs between
    two runs of the same config (``created``, ``jax_version``, ``ntkbench_version``).
    ``values=False`` compares the structure and the NaN pattern only.

    >>> cube = synthetic_cube(widths=(16,), seeds=(0,), steps=(0, 10), n_eigen=4)
    >>> other = cube.copy(deep=True)
    >>> other["entropy"] = other["entropy"] * (1 + 1e-7)
    >>> assert_cubes_close(other, cube)
    >>> other["entropy"] = other["entropy"] * 1.01
    >>> assert_cubes_close(other, cube)
    Traceback (most recent call last):
    ...
    AssertionError: entropy: 2 of 2 values differ by more than rtol=1e-05, atol=1e-05 of max|desired| ...
    """
    import xarray as xr

    if not isinstance(actual, xr.Dataset) or not isinstance(desired, xr.Dataset):
        raise TypeError(
            f"actual and desired must be xarray.Dataset, got {type(actual).__name__} and {type(desired).__name__}"
        )
    if not (rtol >= 0 and atol >= 0):
        raise ValueError(f"rtol and atol must be >= 0, got rtol={rtol!r}, atol={atol!r}")
    assert dict(actual.sizes) == dict(desired.sizes), f"sizes differ: {dict(actual.sizes)} vs {dict(desired.sizes)}"
    assert set(actual.coords) == set(desired.coords), (
        f"coords differ: {sorted(map(str, actual.coords))} vs {sorted(map(str, desired.coords))}"
    )
    for name in desired.coords:
        xr.testing.assert_equal(actual[name].variable, desired[name].variable)
    assert set(actual.data_vars) == set(desired.data_vars), (
        f"variables differ: only in actual {sorted(map(str, set(actual.data_vars) - set(desired.data_vars)))}, "
        f"only in desired {sorted(map(str, set(desired.data_vars) - set(actual.data_vars)))}"
    )
    if attrs:
        provenance = ("created", "jax_version", "ntkbench_version")
        keep = lambda a: {k: v for k, v in a.items() if k not in provenance}  # noqa: E731
        assert _attrs_equal(keep(actual.attrs), keep(desired.attrs)), "attrs differ"
    for name in desired.data_vars:
        a, d = actual[name], desired[name]
        assert a.dims == d.dims, f"{name}: dims {a.dims} vs {d.dims}"
        assert a.dtype == d.dtype, f"{name}: dtype {a.dtype} vs {d.dtype}"
        if attrs:
            assert _attrs_equal(a.attrs, d.attrs), f"{name}: attrs differ: {a.attrs} vs {d.attrs}"
        av, dv = np.asarray(a.transpose(*d.dims).values), np.asarray(d.values)
        if av.dtype.kind not in "fc":
            np.testing.assert_array_equal(av, dv, err_msg=name)
            continue
        a_nan, d_nan = np.isnan(av), np.isnan(dv)
        assert np.array_equal(a_nan, d_nan), f"{name}: NaN at {int((a_nan != d_nan).sum())} other position(s)"
        a64, d64 = av[~d_nan].astype(np.float64), dv[~d_nan].astype(np.float64)
        if d64.size == 0 or not values:
            continue
        scale = float(np.max(np.abs(d64)))
        err = np.abs(a64 - d64)
        bad = err > atol * scale + rtol * np.abs(d64)
        if bad.any():
            worst = int(np.argmax(err - rtol * np.abs(d64)))
            raise AssertionError(
                f"{name}: {int(bad.sum())} of {d64.size} values differ by more than rtol={rtol:g}, atol={atol:g} "
                f"of max|desired| ({scale:.6g}); worst: {a64[worst]!r} vs {d64[worst]!r} "
                f"(|diff| {err[worst]:.3g}, {err[worst] / max(scale, 1e-300):.3g} of the scale)"
            )


def _attrs_equal(a: dict, b: dict) -> bool:
    """Equal attribute dicts, array values (CF ``flag_values``) compared element-wise."""
    return a.keys() == b.keys() and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)
