"""Collective variables of neural networks: empirical time evolution and scaling laws (2024).

The paper tracks the entropy S and the trace Tr K of the empirical NTK of a fixed probe set
while networks train, and reads two mechanisms off them: *information compression* (S
falls; small, shallow networks) and *structure formation* (S ends above its initial value;
deep networks). This module holds the experiment as configs, the run (through
:func:`ntkbench.sweep`, so it resumes and runs on dask), one Bokeh figure builder per figure,
the fitted summary numbers, and notebook widgets.

Experiments (see :data:`CONFIGS`; all record on a train probe and a test probe of the same
size, S in nats and Tr K of the traced eNTK, summed over outputs):

- ``mlp``: MLPs on ``digits``, activation × width × depth × seed (figures F-b1, F-b2);
- ``scale``: the (width, depth) plane, one seed (figure F-b3); it shares the run folder of
  ``mlp``, so grid points of both are run once;
- ``transformer``: a TinyTransformer on the ``stories`` next-token task (figure F-b4);
- ``cnn``: a CNN on ``digits`` images (figure F-b4).

Quick settings (verified to show the paper's signs with margins over three seeds): digits,
500 train / 200 test images, probe 200, SGD lr 0.1, softmax cross-entropy, 300 steps of
batch 64, widths {8, 128} × depths {1, 6}, ReLU and tanh.

What the quick run shows, and where it departs from the paper's reading: compression
(S(end) < S(0)) appears for the narrow shallow **ReLU** net only (ΔS ≈ −0.15 … −0.6 nats
over the three seeds of the shipped cube); the **tanh** nets gain entropy at every width
and depth (8×1: ΔS ≈ +0.8, 128×1: +0.5, deep: +1.3 … +1.9), so "narrow shallow nets
compress" holds for ReLU, not tanh, in this setting. Structure formation (deep nets end
well above S(0), and above the shallow net of the same width) holds for both activations.

Deviations from the paper (documented, also in ``data/README.md``): scikit-learn *digits*
(8×8) instead of MNIST (offline); SGD (lr 0.1) instead of Adam (lr 1e-3) -- with Adam the
compression of narrow ReLU nets was weaker and less consistent in our checks; a
log-spaced recording schedule instead of every epoch; the transformer has a context of 4
tokens and a probe of 24 windows (the traced eNTK sums over 4 × 89 outputs, which is what
makes it expensive on a CPU); the CNN uses global average pooling. The ``full`` config
uses the paper's width/depth grid, 5 seeds and ~500 epochs; it is sized for a cluster
(``--workers`` / ``--scheduler``), not for 2 CPU cores.

Example
-------
>>> from ntkbench.papers import collective
>>> cubes = collective.run_cubes("runs/collective", "quick")      # doctest: +SKIP
>>> fig = collective.fig_b1(cubes["mlp"])                          # doctest: +SKIP
>>> collective.summarize(cubes)["entropy_change"]["relu 8x1"]      # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "KEY",
    "TITLE",
    "CONFIGS",
    "MEASURES",
    "ENTROPY_VARIANTS",
    "TRACE_VARIANTS",
    "B3_QUANTITIES",
    "configs",
    "run",
    "run_cubes",
    "save_cubes",
    "open_cubes",
    "fig_b1",
    "fig_b1_data",
    "fig_b2",
    "fig_b2_data",
    "fig_b3",
    "fig_b3_data",
    "fig_b4",
    "fig_b4_data",
    "figures",
    "export_figures",
    "summarize",
    "format_summary",
    "Workbench",
    "RerunPanel",
]

KEY = "collective"
TITLE = "Collective variables of neural networks: empirical time evolution and scaling laws"

#: recorded measures (train probe and test probe; raw and normalized variants)
MEASURES: list[str] = [
    "entropy",
    "entropy_normalized",
    "trace",
    "trace_per_sample",
    "test_entropy",
    "test_entropy_normalized",
    "test_trace",
    "test_trace_per_sample",
    "loss",
    "test_loss",
    "accuracy",
    "test_accuracy",
    "kernel_distance_init",
    "relative_change_init",
]

#: entropy variant -> (train variable, test variable, label)
ENTROPY_VARIANTS: dict[str, tuple[str, str, str]] = {
    "S": ("entropy", "test_entropy", "S [nat]"),
    "S/lnN": ("entropy_normalized", "test_entropy_normalized", "S / ln N"),
}
#: trace variant -> (train variable, test variable, label)
TRACE_VARIANTS: dict[str, tuple[str, str, str]] = {
    "TrK": ("trace", "test_trace", "Tr K"),
    "TrK/N": ("trace_per_sample", "test_trace_per_sample", "Tr K / N"),
}
#: F-b3 colour quantities -> (label, log colour)
B3_QUANTITIES: dict[str, tuple[str, bool]] = {
    "S0": ("initial entropy S(0)", False),
    "TrK0": ("initial trace Tr K(0)", True),
    "final_test_loss": ("final test loss", True),
    "S": ("entropy S(t) at the chosen step", False),
    "dS": ("entropy change S(t) − S(0)", False),
}

_KERNEL_NOTE = "traced eNTK, sum over outputs"
_MLP_TITLE = "collective: MLPs on digits"


# =========================================================================== configs


def _mlp_base(n_train: int, n_test: int, probe: int, steps: int, lr: float, log_points: int) -> dict[str, Any]:
    return {
        "title": _MLP_TITLE,
        "paper": KEY,
        "seed": 0,
        "model": {"name": "mlp", "width": 8, "depth": 1, "activation": "relu", "parametrization": "standard"},
        "data": {"name": "digits", "n_train": n_train, "n_test": n_test, "seed": 0},
        "train": {"optimizer": "sgd", "lr": lr, "steps": steps, "batch_size": 64, "loss": "ce"},
        "record": {"every": "log", "log_points": log_points, "probe": probe, "measures": list(MEASURES)},
    }


def _with_grid(base: dict[str, Any], grid: dict[str, list]) -> dict[str, Any]:
    cfg = copy.deepcopy(base)
    cfg["grid"] = grid
    return cfg


def _mlp_pair(base: dict[str, Any], widths: list[int], depths: list[int], seeds: list[int],
              scale_widths: list[int], scale_depths: list[int], scale_seeds: list[int]) -> dict[str, dict[str, Any]]:
    # same grid key order in both, so shared grid points map to the same run file
    acts = ["relu", "tanh"]
    return {
        "mlp": _with_grid(base, {"activation": acts, "depth": depths, "width": widths, "seed": seeds}),
        "scale": _with_grid(base, {"activation": acts, "depth": scale_depths, "width": scale_widths, "seed": scale_seeds}),
    }


def _transformer(width: int, layers: list[int], seeds: list[int], context: int, probe: int,
                 n_train: int, steps: int) -> dict[str, Any]:
    return {
        "title": "collective: TinyTransformer on stories",
        "paper": KEY,
        "seed": 0,
        "model": {"name": "transformer", "width": width, "layers": 1, "heads": 4},
        "data": {"name": "stories", "n_train": n_train, "n_test": probe, "seed": 0, "context": context},
        "train": {"optimizer": "adam", "lr": 3e-3, "steps": steps, "batch_size": 32, "loss": "ce"},
        "record": {"every": "log", "log_points": 15, "probe": probe, "measures": list(MEASURES)},
        "grid": {"layers": layers, "seed": seeds},
    }


def _cnn(widths: list[int], depths: list[int], seeds: list[int], n_train: int, n_test: int, probe: int,
         steps: int) -> dict[str, Any]:
    return {
        "title": "collective: CNN on digits",
        "paper": KEY,
        "seed": 0,
        "model": {"name": "cnn", "width": 8, "depth": 1, "pool": "mean"},
        "data": {"name": "digits", "n_train": n_train, "n_test": n_test, "seed": 0, "flatten": False, "scale": "standardize"},
        "train": {"optimizer": "adam", "lr": 0.01, "steps": steps, "batch_size": 64, "loss": "ce"},
        "record": {"every": "log", "log_points": 15, "probe": probe, "measures": list(MEASURES)},
        "grid": {"depth": depths, "width": widths, "seed": seeds},
    }


def _make_configs() -> dict[str, dict[str, dict[str, Any]]]:
    quick_base = _mlp_base(n_train=500, n_test=200, probe=200, steps=300, lr=0.1, log_points=20)
    # full: the paper's grid (widths {4, ..., 1000} x depths {1, 2, 3, 5, 10}, ReLU and
    # tanh, 5 seeds), 1000 train images, ~500 epochs; digits has 1797 images, so 797 test.
    full_base = _mlp_base(n_train=1000, n_test=797, probe=500, steps=8000, lr=0.1, log_points=40)
    full_widths, full_depths = [4, 12, 50, 100, 500, 1000], [1, 2, 3, 5, 10]
    return {
        "quick": {
            **_mlp_pair(quick_base, [8, 128], [1, 6], [0, 1, 2], [8, 32, 128], [1, 3, 6], [0, 1, 2]),
            "transformer": _transformer(32, [1, 3], [0, 1], context=4, probe=24, n_train=512, steps=300),
            "cnn": _cnn([8], [1, 3], [0, 1], n_train=500, n_test=100, probe=100, steps=200),
        },
        # the test suite's size: the quick MLP grid (three seeds, the claims' corners); the
        # scale plane is the corners (shared, no extra runs); one seed of each other model
        "test": {
            **_mlp_pair(quick_base, [8, 128], [1, 6], [0, 1, 2], [8, 128], [1, 6], [0, 1, 2]),
            "transformer": _transformer(32, [1, 3], [0], context=4, probe=16, n_train=256, steps=150),
            "cnn": _cnn([8], [1, 3], [0], n_train=500, n_test=64, probe=64, steps=150),
        },
        "full": {
            **_mlp_pair(full_base, full_widths, full_depths, [0, 1, 2, 3, 4], full_widths, full_depths, [0, 1, 2, 3, 4]),
            "transformer": _transformer(64, [1, 2, 4], [0, 1, 2, 3, 4], context=8, probe=64, n_train=2048, steps=3000),
            "cnn": _cnn([4, 12, 32, 64], [1, 2, 3], [0, 1, 2, 3, 4], n_train=1000, n_test=797, probe=500, steps=8000),
        },
    }


#: name -> experiment -> sweep config (``quick``, ``test`` and ``full``)
CONFIGS: dict[str, dict[str, dict[str, Any]]] = _make_configs()


def configs(name: str = "quick") -> dict[str, dict[str, Any]]:
    """A deep copy of the sweep configs of ``name`` (``"quick"``, ``"test"``, ``"full"``).

    >>> sorted(configs("quick"))
    ['cnn', 'mlp', 'scale', 'transformer']
    >>> configs("quick")["mlp"]["grid"]["width"]
    [8, 128]
    """
    if name not in CONFIGS:
        raise ValueError(f"config name must be one of {sorted(CONFIGS)}, got {name!r}")
    return copy.deepcopy(CONFIGS[name])


# =========================================================================== run


def _folder(experiment: str) -> str:
    return "runs-mlp" if experiment in ("mlp", "scale") else f"runs-{experiment}"


def run_cubes(
    out: str | os.PathLike[str],
    config: str | Mapping[str, Mapping[str, Any]] = "quick",
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the experiments of ``config`` (a name of :data:`CONFIGS` or such a dict) under
    ``out`` through :func:`ntkbench.sweep` and return ``{experiment: cube}``.

    Each experiment's cube is also saved as ``out/<experiment>.nc``. ``mlp`` and ``scale``
    share the run folder ``out/runs-mlp`` (a grid point of both runs once); rerunning
    resumes. The transformer's ``layers`` axis is renamed ``depth`` in its cube.
    """
    from ntkbench import cube as cube_mod
    from ntkbench.sweep import sweep

    cfgs = configs(config) if isinstance(config, str) else copy.deepcopy(dict(config))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cubes: dict[str, Any] = {}
    for name, cfg in cfgs.items():
        ds = sweep(cfg, out / _folder(name), workers=workers, scheduler=scheduler, client=client, progress=progress)
        if "layers" in ds.dims:
            ds = ds.rename({"layers": "depth"})
            ds["depth"].attrs.update(cube_mod.var_attrs("depth"))
        ds.attrs["experiment"] = name
        cube_mod.save(ds, out / f"{name}.nc")
        cubes[name] = ds
    return cubes


def save_cubes(cubes: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write several cubes into ONE netCDF file, atomically: the first (``mlp``) in the root
    group (so :func:`ntkbench.cube.open` reads it), every cube also in a group of its name.

    >>> save_cubes(cubes, "data/collective_quick.nc")  # doctest: +SKIP
    """
    from ntkbench import cube as cube_mod

    if not cubes:
        raise ValueError("cubes is empty: nothing to save")
    for name, ds in cubes.items():
        cube_mod.validate(ds, check_finite=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        names = list(cubes)
        cubes[names[0]].to_netcdf(tmp, mode="w", engine="netcdf4", format="NETCDF4")
        for name in names:
            cubes[name].to_netcdf(tmp, mode="a", group=name, engine="netcdf4", format="NETCDF4")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shipped file must be readable
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def open_cubes(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Open a file written by :func:`save_cubes`: ``{experiment: cube}`` (loaded in memory).

    >>> cubes = open_cubes("data/collective_quick.nc")  # doctest: +SKIP
    >>> sorted(cubes)                                     # doctest: +SKIP
    ['cnn', 'mlp', 'scale', 'transformer']
    """
    import netCDF4
    import xarray as xr

    from ntkbench import cube as cube_mod

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no cube file at {str(path)!r}")
    with netCDF4.Dataset(path) as nc:
        groups = list(nc.groups)
    if not groups:
        return {"mlp": cube_mod.open(path)}
    cubes = {}
    for g in groups:
        with xr.open_dataset(path, group=g, engine="netcdf4") as opened:
            ds = opened.load()
        cube_mod.validate(ds, check_finite=False)
        cubes[g] = ds
    return cubes


def run(
    out: str | os.PathLike[str],
    quick: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    *,
    config: str | Mapping[str, Mapping[str, Any]] | None = None,
    formats: Sequence[str] = ("png", "svg", "html"),
    progress: bool = True,
):
    """``ntkbench reproduce collective``: run the experiments, export every figure and the
    summary. Returns the ``mlp`` cube.

    Writes ``out/<experiment>.nc``, ``out/collective.nc`` (all cubes, :func:`save_cubes`),
    ``out/figures/collective-F-b*.{png,svg,html}``, ``out/summary.txt`` and
    ``out/summary.json``. ``config`` overrides ``quick`` (``"quick"``/``"full"``/``"test"``
    or a dict like :data:`CONFIGS` entries).
    """
    t0 = time.perf_counter()
    name = config if config is not None else ("quick" if quick else "full")
    cubes = run_cubes(out, name, workers=workers, scheduler=scheduler, progress=progress)
    wall = time.perf_counter() - t0
    out = Path(out)
    save_cubes(cubes, out / "collective.nc")
    export_figures(cubes, out / "figures", formats=formats)
    summary = summarize(cubes)
    summary["config"] = name if isinstance(name, str) else "custom"
    summary["run_wall_seconds"] = round(wall, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "summary.txt").write_text(format_summary(summary), encoding="utf-8")
    return cubes["mlp"]


# =========================================================================== data helpers


def _label_act(a: str) -> str:
    return {"relu": "ReLU", "tanh": "tanh"}.get(str(a), str(a))


def _arch_label(act: str, width: int, depth: int) -> str:
    return f"{_label_act(act)} {int(width)}×{int(depth)}"


def _lighten(hex_color: str, amount: float = 0.55) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    mix = [round(c + (255 - c) * amount) for c in (r, g, b)]
    return "#" + "".join(f"{c:02x}" for c in mix)


_PAIR = ("#1f5fa8", "#c2410c")  # config A (blue), config B (orange-red)
_DEPTH_COLORS = ("#1f5fa8", "#c2410c", "#2a9d55", "#7b3fa0", "#8c6d1f")


def _check_variants(entropy: str, trace: str) -> None:
    if entropy not in ENTROPY_VARIANTS:
        raise ValueError(f"entropy must be one of {list(ENTROPY_VARIANTS)}, got {entropy!r}")
    if trace not in TRACE_VARIANTS:
        raise ValueError(f"trace must be one of {list(TRACE_VARIANTS)}, got {trace!r}")


def _seed_mode(seed: Any, ds: Any) -> Any:
    if seed in ("mean", "all"):
        return seed
    if "seed" in ds.dims and seed not in ds["seed"].values.tolist():
        raise ValueError(f"seed must be 'mean', 'all' or one of {ds['seed'].values.tolist()}, got {seed!r}")
    return int(seed)


def _traces(da: Any, seed: Any) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(values over step, std or None) per drawn line for a seed mode."""
    if "seed" not in da.dims:
        return [(np.asarray(da.values, float), None)]
    if seed == "mean":
        std = da.std("seed").values if da.sizes["seed"] > 1 else None
        return [(np.asarray(da.mean("seed").values, float), None if std is None else np.asarray(std, float))]
    if seed == "all":
        return [(np.asarray(da.sel(seed=s).values, float), None) for s in da["seed"].values]
    return [(np.asarray(da.sel(seed=seed).values, float), None)]


def _empty_lines() -> dict[str, list]:
    return {"xs": [], "ys": [], "color": [], "label": [], "width": [], "alpha": []}


def _empty_bands() -> dict[str, list]:
    return {"xs": [], "ys": [], "color": []}


def _add_series(lines, bands, x, ys, color, label, *, light: bool, log_y: bool, log_x: bool = True) -> None:
    col = _lighten(color) if light else color
    for y, std in ys:
        ok = np.isfinite(x) & np.isfinite(y)
        if log_x:
            ok &= x > 0
        if log_y:
            ok &= y > 0
        if not ok.any():
            continue
        lines["xs"].append(x[ok].tolist())
        lines["ys"].append(y[ok].tolist())
        lines["color"].append(col)
        lines["label"].append(label)
        lines["width"].append(1.6 if light else 2.4)
        lines["alpha"].append(0.95)
        if std is not None and np.any(std[ok] > 0):
            lo, hi = y[ok] - std[ok], y[ok] + std[ok]
            if log_y:
                lo = np.maximum(lo, y[ok] * 1e-3)
            bands["xs"].append(x[ok].tolist() + x[ok][::-1].tolist())
            bands["ys"].append(hi.tolist() + lo[::-1].tolist())
            bands["color"].append(col)


# =========================================================================== F-b1


_COLUMNS = ("loss", "entropy", "trace")
_ROWS = ("activation", "width", "depth")


def _b1_pairs(ds: Any, width: int | None, depth: int | None, activation: str) -> dict[str, list[tuple[str, int, int]]]:
    """Row -> the two (activation, width, depth) configurations it compares."""
    widths = [int(v) for v in ds["width"].values]
    depths = [int(v) for v in ds["depth"].values]
    acts = [str(v) for v in ds["activation"].values]
    width = widths[0] if width is None else int(width)
    depth = depths[0] if depth is None else int(depth)
    if width not in widths:
        raise ValueError(f"width must be one of {widths}, got {width!r}")
    if depth not in depths:
        raise ValueError(f"depth must be one of {depths}, got {depth!r}")
    if activation not in acts:
        raise ValueError(f"activation must be one of {acts}, got {activation!r}")
    pairs = {
        "activation": [(a, width, depth) for a in acts[:2]],
        "width": [(activation, w, depth) for w in (widths[0], widths[-1])],
        "depth": [(activation, width, d) for d in (depths[0], depths[-1])],
    }
    # a cube with one value along an axis: that row shows the one net
    return {row: list(dict.fromkeys(cfgs)) for row, cfgs in pairs.items()}


def _column_vars(col: str, entropy: str, trace: str) -> tuple[str, str, str]:
    if col == "loss":
        return "loss", "test_loss", "loss (cross-entropy)"
    if col == "entropy":
        return ENTROPY_VARIANTS[entropy]
    return TRACE_VARIANTS[trace]


def fig_b1_data(
    ds: Any,
    *,
    width: int | None = None,
    depth: int | None = None,
    activation: str = "relu",
    seed: Any = "mean",
    entropy: str = "S",
    trace: str = "TrK",
    test: bool = True,
) -> dict[str, dict[str, list]]:
    """Columns of :func:`fig_b1`: for each row r and column c the sources
    ``"b1-{r}-{c}-lines"`` and ``"b1-{r}-{c}-bands"`` (x = step + 1)."""
    _check_variants(entropy, trace)
    seed = _seed_mode(seed, ds)
    pairs = _b1_pairs(ds, width, depth, activation)
    x = np.asarray(ds["step"].values, float) + 1.0
    data: dict[str, dict[str, list]] = {}
    for row, configs_ in pairs.items():
        for col in _COLUMNS:
            v_train, v_test, _ = _column_vars(col, entropy, trace)
            lines, bands = _empty_lines(), _empty_bands()
            log_y = col in ("loss", "trace")
            for (act, w, d), color in zip(configs_, _PAIR):
                sel = ds.sel(activation=act, width=w, depth=d)
                name = _arch_label(act, w, d)
                _add_series(lines, bands, x, _traces(sel[v_train], seed), color, f"{name} train", light=False, log_y=log_y)
                if test:
                    _add_series(lines, bands, x, _traces(sel[v_test], seed), color, f"{name} test", light=True, log_y=log_y)
            data[f"b1-{row}-{col}-lines"] = lines
            data[f"b1-{row}-{col}-bands"] = bands
    return data


def _probe_note(ds: Any) -> str:
    try:
        cfg = json.loads(ds.attrs.get("config", "{}"))
        probe = cfg.get("record", {}).get("probe")
        data = cfg.get("data", {}).get("name")
    except (TypeError, ValueError, AttributeError):
        probe, data = None, None
    parts = [_KERNEL_NOTE]
    if probe:
        parts.append(f"probe N = {probe} train + {probe} test")
    if data:
        parts.append(str(data))
    return ", ".join(parts)


_SI_LABEL_JS = """
const a = Math.abs(tick);
for (const [v, u] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
  if (a >= v) return String(Number((tick / v).toPrecision(3))) + u;
}
return String(Number(tick.toPrecision(3)));
"""


def _si_formatter() -> Any:
    """Compact SI tick labels (``20k``, ``1.5M``) instead of ``2.000e+4``."""
    from bokeh.models import CustomJSTickFormatter

    return CustomJSTickFormatter(code=_SI_LABEL_JS)


def _row_title(figure: str, row: str, a: tuple, b: tuple) -> str:
    """Title of row ``row`` of F-b1 / F-b2 comparing nets ``a`` and ``b``
    ((activation, width, depth), from :func:`_b1_pairs`)."""
    if figure == "F-b2":
        return f"{row}: {_arch_label(*a)} vs {_arch_label(*b)}"
    return {
        "activation": f"activation: {_label_act(a[0])} vs {_label_act(b[0])} at {a[1]}×{a[2]}",
        "width": f"width: {a[1]} vs {b[1]} ({_label_act(a[0])}, depth {a[2]})",
        "depth": f"depth: {a[2]} vs {b[2]} ({_label_act(a[0])}, width {a[1]})",
    }[row]


def _header(figure: str, ds: Any, entropy: str, trace: str, seed: Any = "mean", fallback: Sequence[str] = ()) -> str:
    """The header text of figure ``figure`` ("F-b1" … "F-b4") at these settings; ``ds`` is
    the cube behind its probe note (unused for F-b4), ``fallback`` the F-b4 architectures
    shown as the mean because they lack ``seed`` (:func:`b4_seed_fallbacks`)."""
    ev, tv = ENTROPY_VARIANTS[entropy][2], TRACE_VARIANTS[trace][2]
    band = "mean over seeds" if figure == "F-b2" else "mean ± std over seeds"
    seed_text = {"mean": band, "all": "every seed"}.get(seed, f"seed {seed}")
    if fallback:
        seed_text += f" ({', '.join(fallback)}: mean ± std, seed {seed} not run)"
    if figure == "F-b1":
        return f"<b>F-b1 time evolution</b> — {ev}, {tv}; {_probe_note(ds)}; {seed_text}; train dark, test light"
    if figure == "F-b2":
        return f"<b>F-b2 phase plots</b> — {ev} and {tv} vs loss; {_probe_note(ds)}; {seed_text}; ○ start, □ end"
    if figure == "F-b3":
        return f"<b>F-b3 scale diagram</b> — {ev}, {tv} (log colour); {_probe_note(ds)}; mean over seeds"
    return f"<b>F-b4 other architectures</b> — {ev}, {tv}; {_KERNEL_NOTE}; {seed_text}; train dark, test light"


def _panel(title: str, x_label: str, y_label: str, log_x: bool, log_y: bool, width: int, height: int) -> Any:
    from ntkbench import plots

    fig = plots._figure(title, x_label, y_label, log_x, log_y, width=width, height=height)
    if log_y and "Tr" in y_label:
        fig.yaxis[0].formatter = _si_formatter()
    return fig


def _style_panel(fig: Any, legend: bool) -> None:
    from ntkbench import plots

    plots._style(fig)
    fig.title.text_font_size = "11pt"
    for ax in (*fig.xaxis, *fig.yaxis):
        ax.axis_label_text_font_size = "10.5pt"
        ax.major_label_text_font_size = "9.5pt"
    if legend and fig.legend:
        plots._legend_style(fig, "bottom_left")
        fig.legend[0].label_text_font_size = "8.5pt"
    elif fig.legend:
        fig.legend[0].visible = False


def _lines_and_bands(fig: Any, data: Mapping[str, Mapping[str, list]], key: str, legend: bool) -> Any:
    from bokeh.models import ColumnDataSource

    bands = ColumnDataSource(dict(data[f"{key}-bands"]), name=f"{key}-bands")
    lines = ColumnDataSource(dict(data[f"{key}-lines"]), name=f"{key}-lines")
    fig.patches("xs", "ys", source=bands, fill_color="color", fill_alpha=0.2, line_color=None)
    kw = {"legend_field": "label"} if legend else {}
    return fig.multi_line("xs", "ys", source=lines, line_color="color", line_width="width", line_alpha="alpha", **kw)


def _marker(fig: Any, name: str, location: float | None) -> None:
    from bokeh.models import Span

    fig.add_layout(
        Span(
            location=float(location) if location is not None else float("nan"),
            dimension="height",
            line_color="#888888",
            line_dash="dashed",
            line_width=1.2,
            name=name,
            visible=location is not None,
        )
    )


def fig_b1(
    ds: Any,
    *,
    width: int | None = None,
    depth: int | None = None,
    activation: str = "relu",
    seed: Any = "mean",
    entropy: str = "S",
    trace: str = "TrK",
    test: bool = True,
    step_marker: int | None = None,
    panel_size: tuple[int, int] = (330, 250),
) -> Any:
    """F-b1: the 3×3 time-evolution grid.

    Rows compare two MLPs each: **activation** (ReLU vs tanh at ``width`` × ``depth``),
    **width** (narrowest vs widest at ``depth``, ``activation``), **depth** (shallowest vs
    deepest at ``width``, ``activation``). Columns: loss, entropy (``entropy`` variant
    ``"S"`` or ``"S/lnN"``), trace (``"TrK"`` or ``"TrK/N"``) against step + 1 on a log
    axis. Train probe dark, test probe light; ``seed="mean"`` draws mean ± std bands,
    ``"all"`` every seed, an int one seed. Defaults: the narrowest width and the smallest
    depth, ReLU (so each row contains the narrow shallow ReLU net).

    Returns a Bokeh ``GridPlot``; its sources are named as in :func:`fig_b1_data`, the
    dashed step markers ``"b1-{row}-{col}-marker"``.

    >>> fig = fig_b1(cubes["mlp"], seed="all", entropy="S/lnN")  # doctest: +SKIP
    """
    from bokeh.layouts import column, gridplot
    from bokeh.models import Div

    data = fig_b1_data(ds, width=width, depth=depth, activation=activation, seed=seed, entropy=entropy, trace=trace, test=test)
    pairs = _b1_pairs(ds, width, depth, activation)
    figs = []
    w, h = panel_size
    for row in _ROWS:
        row_title = _row_title("F-b1", row, pairs[row][0], pairs[row][-1])
        row_figs = []
        for j, col in enumerate(_COLUMNS):
            _, _, ylab = _column_vars(col, entropy, trace)
            title = row_title if j == 0 else ""
            fig = _panel(title, "step + 1", ylab, True, col in ("loss", "trace"), w, h)
            _lines_and_bands(fig, data, f"b1-{row}-{col}", legend=(j == 0))
            _marker(fig, f"b1-{row}-{col}-marker", None if step_marker is None else step_marker + 1)
            _style_panel(fig, legend=(j == 0))
            row_figs.append(fig)
        figs.append(row_figs)
    head = Div(
        text=_header("F-b1", ds, entropy, trace, seed),
        styles={"font-family": "Helvetica, Arial, sans-serif", "font-size": "12pt"},
        width=3 * w,
    )
    grid = gridplot(figs, toolbar_location="right", merge_tools=True)
    return column(head, grid, name="F-b1")


# =========================================================================== F-b2


def fig_b2_data(
    ds: Any,
    *,
    width: int | None = None,
    depth: int | None = None,
    activation: str = "relu",
    seed: Any = "mean",
    entropy: str = "S",
    trace: str = "TrK",
    test: bool = True,
    step: int | None = None,
) -> dict[str, dict[str, list]]:
    """Columns of :func:`fig_b2`: ``"b2-{row}-{col}-lines"`` (x = loss, y = entropy or
    trace), ``"b2-{row}-{col}-ends"`` (start circle / end square) and
    ``"b2-{row}-{col}-marker"`` (the point at ``step``)."""
    _check_variants(entropy, trace)
    seed = _seed_mode(seed, ds)
    pairs = _b1_pairs(ds, width, depth, activation)
    steps = ds["step"].values
    k = None if step is None else int(np.abs(steps - step).argmin())
    data: dict[str, dict[str, list]] = {}
    for row, configs_ in pairs.items():
        for col in ("entropy", "trace"):
            v_train, v_test, _ = _column_vars(col, entropy, trace)
            lines = _empty_lines()
            ends: dict[str, list] = {"x": [], "y": [], "color": [], "marker": [], "label": []}
            marker: dict[str, list] = {"x": [], "y": [], "color": []}
            for (act, w, d), color in zip(configs_, _PAIR):
                sel = ds.sel(activation=act, width=w, depth=d)
                name = _arch_label(act, w, d)
                probes = [("train", "loss", v_train, False)] + ([("test", "test_loss", v_test, True)] if test else [])
                for probe, lv, yv, light in probes:
                    xs = _traces(sel[lv], seed)
                    ys = _traces(sel[yv], seed)
                    col_hex = _lighten(color) if light else color
                    for (xl, _), (yl, _) in zip(xs, ys):
                        ok = np.isfinite(xl) & np.isfinite(yl) & (xl > 0) & ((yl > 0) if col == "trace" else True)
                        if not ok.any():
                            continue
                        lines["xs"].append(xl[ok].tolist())
                        lines["ys"].append(yl[ok].tolist())
                        lines["color"].append(col_hex)
                        lines["label"].append(f"{name} {probe}")
                        lines["width"].append(1.6 if light else 2.4)
                        lines["alpha"].append(0.95)
                        idx = np.flatnonzero(ok)
                        for i, mk in ((idx[0], "circle"), (idx[-1], "square")):
                            ends["x"].append(float(xl[i]))
                            ends["y"].append(float(yl[i]))
                            ends["color"].append(col_hex)
                            ends["marker"].append(mk)
                            ends["label"].append(f"{name} {probe} step {int(steps[i])}")
                        if k is not None and ok[k]:
                            marker["x"].append(float(xl[k]))
                            marker["y"].append(float(yl[k]))
                            marker["color"].append(col_hex)
            data[f"b2-{row}-{col}-lines"] = lines
            data[f"b2-{row}-{col}-ends"] = ends
            data[f"b2-{row}-{col}-marker"] = marker
    return data


def fig_b2(
    ds: Any,
    *,
    width: int | None = None,
    depth: int | None = None,
    activation: str = "relu",
    seed: Any = "mean",
    entropy: str = "S",
    trace: str = "TrK",
    test: bool = True,
    step: int | None = None,
    panel_size: tuple[int, int] = (380, 260),
) -> Any:
    """F-b2: phase plots, entropy against loss and trace against loss, for the rows of
    :func:`fig_b1`. The loss axis is logarithmic and inverted, so training runs left to
    right; circles mark step 0, squares the last step, a filled dot the chosen ``step``.

    >>> fig = fig_b2(cubes["mlp"], step=100)  # doctest: +SKIP
    """
    from bokeh.layouts import column, gridplot
    from bokeh.models import ColumnDataSource, Div, HoverTool

    data = fig_b2_data(ds, width=width, depth=depth, activation=activation, seed=seed, entropy=entropy, trace=trace, test=test, step=step)
    pairs = _b1_pairs(ds, width, depth, activation)
    w, h = panel_size
    rows = []
    for row in _ROWS:
        a, b = pairs[row][0], pairs[row][-1]
        row_figs = []
        for j, col in enumerate(("entropy", "trace")):
            _, _, ylab = _column_vars(col, entropy, trace)
            title = _row_title("F-b2", row, a, b) if j == 0 else ""
            fig = _panel(title, "loss (log, inverted: time runs →)", ylab, True, col == "trace", w, h)
            key = f"b2-{row}-{col}"
            legend = j == 1
            r = _lines_and_bands(fig, {f"{key}-lines": data[f"{key}-lines"], f"{key}-bands": _empty_bands()}, key, legend=legend)
            ends = ColumnDataSource(dict(data[f"{key}-ends"]), name=f"{key}-ends")
            fig.scatter("x", "y", source=ends, marker="marker", size=7, fill_color="white", line_color="color", line_width=1.5)
            mk = ColumnDataSource(dict(data[f"{key}-marker"]), name=f"{key}-marker")
            fig.scatter("x", "y", source=mk, size=9, color="color", line_color="black")
            fig.x_range.flipped = True
            fig.add_tools(HoverTool(renderers=[r], tooltips=[("", "@label")]))
            _style_panel(fig, legend=legend)
            if legend:  # beside the plot: phase trajectories fill every corner
                fig.add_layout(fig.legend[0], "right")
                fig.width += 150
            row_figs.append(fig)
        rows.append(row_figs)
    head = Div(
        text=_header("F-b2", ds, entropy, trace, seed),
        styles={"font-family": "Helvetica, Arial, sans-serif", "font-size": "12pt"},
        width=2 * w + 150,
    )
    return column(head, gridplot(rows, toolbar_location="right", merge_tools=True), name="F-b2")


# =========================================================================== F-b3


def _b3_values(ds: Any, quantity: str, step: int | None, entropy: str, trace: str) -> Any:
    """DataArray over (activation, depth, width) of a B3 quantity (seed mean)."""
    ev, _, _ = ENTROPY_VARIANTS[entropy]
    tv, _, _ = TRACE_VARIANTS[trace]
    steps = ds["step"].values
    st = int(steps[-1]) if step is None else int(steps[np.abs(steps - step).argmin()])
    if quantity == "S0":
        da = ds[ev].isel(step=0)
    elif quantity == "TrK0":
        da = ds[tv].isel(step=0)
    elif quantity == "final_test_loss":
        da = ds["test_loss"].isel(step=-1)
    elif quantity == "S":
        da = ds[ev].sel(step=st)
    elif quantity == "dS":
        da = ds[ev].sel(step=st) - ds[ev].isel(step=0)
    else:
        raise ValueError(f"quantity must be one of {list(B3_QUANTITIES)}, got {quantity!r}")
    if "seed" in da.dims:
        da = da.mean("seed")
    return da


def _b3_range(ds: Any, quantity: str, entropy: str, trace: str) -> tuple[float, float]:
    """Colour range of a quantity over ALL steps (so the step slider shows motion)."""
    if quantity in ("S", "dS"):
        vals = np.concatenate([np.ravel(_b3_values(ds, quantity, int(s), entropy, trace).values) for s in ds["step"].values])
    else:
        vals = np.ravel(_b3_values(ds, quantity, None, entropy, trace).values)
    vals = vals[np.isfinite(vals)]
    if B3_QUANTITIES[quantity][1]:
        vals = vals[vals > 0]
    if not vals.size:
        return (0.0, 1.0)
    lo, hi = float(vals.min()), float(vals.max())
    if quantity == "dS":  # symmetric around 0: the sign is the signal
        m = max(abs(lo), abs(hi), 1e-6)
        return (-m, m)
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    return (lo, hi)


def _b3_title(quantity: str, step: int) -> str:
    return {
        "S0": "initial entropy S(0)",
        "TrK0": "initial trace Tr K(0)",
        "final_test_loss": "final test loss",
        "S": f"entropy S(t), t = {step}",
        "dS": f"ΔS = S(t) − S(0), t = {step}",
    }[quantity]


def _cell_text(v: float, quantity: str) -> str:
    if not np.isfinite(v):
        return ""
    if abs(v) >= 1e6:
        return f"{v / 1e6:.3g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:+.2f}" if quantity == "dS" else f"{v:.2f}"


def _text_colors(values: list[float], quantity: str, lo: float, hi: float) -> list[str]:
    """White text on dark cells, dark text on light ones."""
    out = []
    log = B3_QUANTITIES[quantity][1]
    for v in values:
        if not np.isfinite(v):
            out.append("#222222")
            continue
        if quantity == "dS":
            dark = abs(v) > 0.55 * max(abs(lo), abs(hi))
        else:
            a, b, x = (np.log(lo), np.log(hi), np.log(max(v, 1e-300))) if log else (lo, hi, v)
            dark = (x - a) / ((b - a) or 1.0) < 0.45
        out.append("white" if dark else "#222222")
    return out


def fig_b3_data(
    ds: Any, quantity: str = "dS", *, step: int | None = None, entropy: str = "S", trace: str = "TrK"
) -> dict[str, dict[str, list]]:
    """Columns of :func:`fig_b3`: ``"b3-{quantity}-{activation}-cells"`` with
    ``width_label``, ``depth_label``, ``width``, ``depth``, ``value``, ``text``,
    ``text_color``."""
    _check_variants(entropy, trace)
    da = _b3_values(ds, quantity, step, entropy, trace)
    lo, hi = _b3_range(ds, quantity, entropy, trace)
    out = {}
    for act in ds["activation"].values.tolist():
        cells: dict[str, list] = {k: [] for k in ("width_label", "depth_label", "width", "depth", "value", "text")}
        sub = da.sel(activation=act)
        for d in ds["depth"].values.tolist():
            for w in ds["width"].values.tolist():
                v = float(sub.sel(width=w, depth=d).values)
                cells["width_label"].append(str(w))
                cells["depth_label"].append(str(d))
                cells["width"].append(int(w))
                cells["depth"].append(int(d))
                cells["value"].append(v if np.isfinite(v) else float("nan"))
                cells["text"].append(_cell_text(v, quantity))
        cells["text_color"] = _text_colors(cells["value"], quantity, lo, hi)
        out[f"b3-{quantity}-{act}-cells"] = cells
    return out


def fig_b3(
    ds: Any,
    quantities: str | Sequence[str] = ("S0", "TrK0", "final_test_loss", "dS"),
    *,
    step: int | None = None,
    entropy: str = "S",
    trace: str = "TrK",
    cell: int = 62,
) -> Any:
    """F-b3: the (width, depth) scale diagram, one heat map per activation (columns) and
    per quantity (rows) of :data:`B3_QUANTITIES` (``"S0"``, ``"TrK0"`` with a log colour
    scale, ``"final_test_loss"``, ``"S"`` and ``"dS"`` = S(step) − S(0) at ``step``,
    default the last). Colour ranges of ``"S"``/``"dS"`` span all steps, so moving
    ``step`` shows S move; ``"dS"`` uses a diverging palette centred at 0 (blue =
    compression, red = structure formation). Seeds are averaged.

    >>> fig = fig_b3(cubes["scale"], "dS", step=30)  # doctest: +SKIP
    """
    import bokeh.palettes as bp
    from bokeh.layouts import column, row
    from bokeh.models import ColorBar, ColumnDataSource, Div, HoverTool, LinearColorMapper, LogColorMapper
    from bokeh.plotting import figure

    from ntkbench import plots

    qs = [quantities] if isinstance(quantities, str) else list(quantities)
    steps = ds["step"].values
    st = int(steps[-1]) if step is None else int(steps[np.abs(steps - step).argmin()])
    acts = ds["activation"].values.tolist()
    x_f = [str(w) for w in ds["width"].values.tolist()]
    y_f = [str(d) for d in ds["depth"].values.tolist()]
    rows = []
    for q in qs:
        data = fig_b3_data(ds, q, step=st, entropy=entropy, trace=trace)
        label, log = B3_QUANTITIES[q]
        lo, hi = _b3_range(ds, q, entropy, trace)
        if q == "dS":  # blue = compression (S fell), red = structure formation (S rose)
            pal = bp.interp_palette(bp.RdBu11, 256)
        else:
            pal = bp.Viridis256
        mapper = (LogColorMapper if log else LinearColorMapper)(palette=pal, low=lo, high=hi, nan_color="#dddddd")
        figs = []
        for i, act in enumerate(acts):
            qlabel = _b3_title(q, st)
            fig = figure(
                title=f"{_label_act(act)}: {qlabel}",
                x_range=x_f,
                y_range=y_f,
                x_axis_label="width",
                y_axis_label="depth (hidden layers)",
                width=cell * len(x_f) + 110 + (90 if i == len(acts) - 1 else 0),
                height=cell * len(y_f) + 90,
                tools="hover,save",
                name=f"b3-{q}-{act}",
            )
            src = ColumnDataSource(data[f"b3-{q}-{act}-cells"], name=f"b3-{q}-{act}-cells")
            fig.rect("width_label", "depth_label", 1, 1, source=src, fill_color={"field": "value", "transform": mapper}, line_color="white")
            fig.text("width_label", "depth_label", text="text", source=src, text_align="center", text_baseline="middle",
                     text_font_size="8.5pt", text_color="text_color")
            hover = fig.select_one(HoverTool)
            hover.tooltips = [("width", "@width"), ("depth", "@depth"), (q, "@value{%0.4g}")]
            hover.formatters = {"@value": "printf"}
            if i == len(acts) - 1:
                bar = ColorBar(color_mapper=mapper, width=12, major_label_text_font_size="9pt")
                if log:
                    bar.formatter = _si_formatter()
                fig.add_layout(bar, "right")
            plots._style(fig)
            fig.title.text_font_size = "10.5pt"
            fig.grid.grid_line_color = None
            fig.axis.axis_line_color = None
            fig.axis.major_tick_line_color = None
            figs.append(fig)
        rows.append(row(*figs))
    head = Div(
        text=_header("F-b3", ds, entropy, trace),
        styles={"font-family": "Helvetica, Arial, sans-serif", "font-size": "12pt"},
        width=sum(f.width for f in rows[0].children) if rows else 600,
    )
    return column(head, *rows, name="F-b3")


# =========================================================================== F-b4


def b4_seed_fallbacks(cubes: Mapping[str, Any], seed: Any, missing_seed: str = "error") -> list[str]:
    """Architectures of F-b4 whose cube lacks the single ``seed`` asked for. With
    ``missing_seed="mean"`` they show the mean over their own seeds instead (the Workbench
    offers the MLP sweep's seeds, which may be more); with ``"error"`` a missing seed raises
    ``ValueError`` naming ``seed``."""
    if missing_seed not in ("error", "mean"):
        raise ValueError(f"missing_seed must be 'error' or 'mean', got {missing_seed!r}")
    if seed in ("mean", "all"):
        return []
    archs = [a for a in ("transformer", "cnn") if a in cubes]
    missing = [a for a in archs if "seed" in cubes[a].dims and seed not in cubes[a]["seed"].values.tolist()]
    if missing and missing_seed == "error":
        held = cubes[missing[0]]["seed"].values.tolist()
        raise ValueError(f"seed must be 'mean', 'all' or one of {held} ({missing[0]} cube), got {seed!r}")
    return missing


def fig_b4_data(
    cubes: Mapping[str, Any], *, seed: Any = "mean", entropy: str = "S", trace: str = "TrK", test: bool = True,
    missing_seed: str = "error",
) -> dict[str, dict[str, list]]:
    """Columns of :func:`fig_b4`: ``"b4-{arch}-{col}-lines"`` / ``-bands`` for arch in
    ``transformer``, ``cnn`` (one line per depth; widths other than the first are dropped).

    A single ``seed`` that an architecture's cube lacks is an error, or, with
    ``missing_seed="mean"``, shows the mean over that cube's seeds (:func:`b4_seed_fallbacks`)."""
    _check_variants(entropy, trace)
    fallback = b4_seed_fallbacks(cubes, seed, missing_seed)
    data: dict[str, dict[str, list]] = {}
    for arch in ("transformer", "cnn"):
        if arch not in cubes:
            continue
        ds = cubes[arch]
        if "width" in ds.dims:
            ds = ds.isel(width=0)
        sd = "mean" if arch in fallback else _seed_mode(seed, ds)
        x = np.asarray(ds["step"].values, float) + 1.0
        for col in _COLUMNS:
            v_train, v_test, _ = _column_vars(col, entropy, trace)
            lines, bands = _empty_lines(), _empty_bands()
            log_y = col in ("loss", "trace")
            for d, color in zip(ds["depth"].values.tolist(), _DEPTH_COLORS):
                sel = ds.sel(depth=d)
                name = f"{'layers' if arch == 'transformer' else 'depth'} {d}"
                _add_series(lines, bands, x, _traces(sel[v_train], sd), color, f"{name} train", light=False, log_y=log_y)
                if test:
                    _add_series(lines, bands, x, _traces(sel[v_test], sd), color, f"{name} test", light=True, log_y=log_y)
            data[f"b4-{arch}-{col}-lines"] = lines
            data[f"b4-{arch}-{col}-bands"] = bands
    return data


def _arch_title(arch: str, ds: Any) -> str:
    try:
        cfg = json.loads(ds.attrs.get("config", "{}"))
        m, d = cfg.get("model", {}), cfg.get("data", {})
    except (TypeError, ValueError, AttributeError):
        m, d = {}, {}
    if arch == "transformer":
        return f"TinyTransformer w{m.get('width')}, stories (ctx {d.get('context')})"
    w = int(ds["width"].values[0]) if "width" in ds.dims else m.get("width")
    return f"CNN {w} channels, digits"


def fig_b4(
    cubes: Mapping[str, Any],
    *,
    seed: Any = "mean",
    entropy: str = "S",
    trace: str = "TrK",
    test: bool = True,
    panel_size: tuple[int, int] = (330, 250),
    missing_seed: str = "error",
) -> Any:
    """F-b4: other architectures, a TinyTransformer on ``stories`` (next token) and a CNN on
    ``digits``: loss, entropy and trace against step + 1, one colour per depth, train dark,
    test light. ``cubes`` holds ``"transformer"`` and/or ``"cnn"``. ``missing_seed``: see
    :func:`fig_b4_data`; the header says which architectures fell back to the mean.

    >>> fig = fig_b4(cubes)  # doctest: +SKIP
    """
    from bokeh.layouts import column, gridplot
    from bokeh.models import Div

    data = fig_b4_data(cubes, seed=seed, entropy=entropy, trace=trace, test=test, missing_seed=missing_seed)
    w, h = panel_size
    rows = []
    for arch in ("transformer", "cnn"):
        if arch not in cubes:
            continue
        row_figs = []
        for j, col in enumerate(_COLUMNS):
            _, _, ylab = _column_vars(col, entropy, trace)
            fig = _panel(_arch_title(arch, cubes[arch]) if j == 0 else "", "step + 1", ylab, True, col in ("loss", "trace"), w, h)
            _lines_and_bands(fig, data, f"b4-{arch}-{col}", legend=(j == 0))
            _style_panel(fig, legend=(j == 0))
            row_figs.append(fig)
        rows.append(row_figs)
    if not rows:
        raise ValueError("cubes holds neither a 'transformer' nor a 'cnn' cube")
    head = Div(
        text=_header("F-b4", None, entropy, trace, seed, b4_seed_fallbacks(cubes, seed, missing_seed)),
        styles={"font-family": "Helvetica, Arial, sans-serif", "font-size": "12pt"},
        width=3 * w,
    )
    return column(head, gridplot(rows, toolbar_location="right", merge_tools=True), name="F-b4")


# =========================================================================== all figures


def figures(cubes: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
    """``{"F-b1": ..., "F-b2": ..., "F-b3": ..., "F-b4": ...}`` with default settings
    (``kw``: ``entropy``, ``trace``, ``seed`` passed to every builder that takes them)."""
    seed = kw.get("seed", "mean")
    ev, tv = kw.get("entropy", "S"), kw.get("trace", "TrK")
    figs = {
        "F-b1": fig_b1(cubes["mlp"], seed=seed, entropy=ev, trace=tv),
        "F-b2": fig_b2(cubes["mlp"], seed=seed, entropy=ev, trace=tv),
        "F-b3": fig_b3(cubes.get("scale", cubes["mlp"]), entropy=ev, trace=tv),
    }
    if "transformer" in cubes or "cnn" in cubes:
        figs["F-b4"] = fig_b4(cubes, seed=seed, entropy=ev, trace=tv)
    return figs


def export_figures(cubes: Mapping[str, Any], folder: str | os.PathLike[str], formats: Sequence[str] = ("png", "svg", "html")) -> list[Path]:
    """Export every figure of :func:`figures` as ``folder/collective-F-b*.{format}``."""
    from ntkbench import plots

    written = []
    for name, fig in figures(cubes).items():
        for fmt in formats:
            written.append(plots.export(fig, Path(folder) / f"collective-{name}", fmt))
    return written


# =========================================================================== summary


def _fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least squares y = a + b x; returns (a, b, R²)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    b, a = np.polyfit(x, y, 1)
    pred = a + b * x
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else 1.0
    return float(a), float(b), r2


def summarize(cubes: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers the claims rest on, as a JSON-able dict.

    - ``entropy_change``: per MLP (``"relu 8x1"``) the change S(end) − S(0) of the train
      probe per seed, its mean, and how many seeds fell / rose; ``test_entropy_change``
      the same on the test probe;
    - ``kernel_change``: ``kernel_distance_init`` and ``relative_change_init`` at the end
      (seed means);
    - ``loss_ratio``: final / initial training loss, the largest over seeds;
    - ``trace0_vs_width``: log–log slope and R² of Tr K(0) against width per
      (activation, depth), from the ``scale`` cube (seed mean);
    - ``entropy0_vs_depth``: S(0) per depth and the slope of a line fit per
      (activation, width);
    - ``architectures``: the same entropy change for the transformer and CNN runs.
    """
    mlp = cubes["mlp"]
    out: dict[str, Any] = {"entropy_note": "S in nats, " + _KERNEL_NOTE + "; change = S(last step) - S(0)"}
    ec, tec, kc, lr = {}, {}, {}, {}
    for act in mlp["activation"].values.tolist():
        for d in mlp["depth"].values.tolist():
            for w in mlp["width"].values.tolist():
                sel = mlp.sel(activation=act, depth=d, width=w)
                key = f"{act} {w}x{d}"
                for var, dest in (("entropy", ec), ("test_entropy", tec)):
                    delta = (sel[var].isel(step=-1) - sel[var].isel(step=0)).values
                    delta = np.atleast_1d(delta)
                    dest[key] = {
                        "per_seed": [round(float(v), 4) for v in delta],
                        "mean": round(float(np.mean(delta)), 4),
                        "n_fell": int((delta < 0).sum()),
                        "n_rose": int((delta > 0).sum()),
                        "n_seeds": int(delta.size),
                    }
                kc[key] = {
                    "kernel_distance_init": round(float(sel["kernel_distance_init"].isel(step=-1).mean()), 5),
                    "relative_change_init": round(float(sel["relative_change_init"].isel(step=-1).mean()), 4),
                }
                ratio = np.atleast_1d((sel["loss"].isel(step=-1) / sel["loss"].isel(step=0)).values)
                lr[key] = round(float(ratio.max()), 4)
    out["entropy_change"] = ec
    out["test_entropy_change"] = tec
    out["kernel_change"] = kc
    out["loss_ratio"] = lr

    scale = cubes.get("scale", mlp)
    tw, sd = {}, {}
    for act in scale["activation"].values.tolist():
        for d in scale["depth"].values.tolist():
            tr0 = scale["trace"].sel(activation=act, depth=d).isel(step=0)
            if "seed" in tr0.dims:
                tr0 = tr0.mean("seed")
            widths = scale["width"].values.astype(float)
            a, b, r2 = _fit_line(np.log(widths), np.log(tr0.values))
            tw[f"{act} depth {d}"] = {
                "widths": widths.astype(int).tolist(),
                "trace0": [float(f"{v:.5g}") for v in tr0.values],
                "loglog_slope": round(b, 4),
                "r2": round(r2, 4),
            }
        for w in scale["width"].values.tolist():
            s0 = scale["entropy"].sel(activation=act, width=w).isel(step=0)
            if "seed" in s0.dims:
                s0 = s0.mean("seed")
            depths = scale["depth"].values.astype(float)
            a, b, r2 = _fit_line(depths, s0.values)
            sd[f"{act} width {w}"] = {
                "depths": depths.astype(int).tolist(),
                "entropy0": [round(float(v), 4) for v in s0.values],
                "slope_per_layer": round(b, 4),
                "r2": round(r2, 4),
            }
    out["trace0_vs_width"] = tw
    out["entropy0_vs_depth"] = sd

    archs = {}
    for arch in ("transformer", "cnn"):
        if arch not in cubes:
            continue
        ds = cubes[arch]
        for d in ds["depth"].values.tolist():
            sel = ds.sel(depth=d)
            if "width" in sel.dims:
                sel = sel.isel(width=0)
            delta = np.atleast_1d((sel["entropy"].isel(step=-1) - sel["entropy"].isel(step=0)).values)
            ratio = np.atleast_1d((sel["loss"].isel(step=-1) / sel["loss"].isel(step=0)).values)
            archs[f"{arch} depth {d}"] = {
                "entropy_change_per_seed": [round(float(v), 4) for v in delta],
                "n_rose": int((delta > 0).sum()),
                "n_seeds": int(delta.size),
                "loss_ratio_max": round(float(ratio.max()), 4),
            }
    out["architectures"] = archs
    return out


def format_summary(summary: Mapping[str, Any]) -> str:
    """A short plain-text report of :func:`summarize`'s numbers."""
    lines = [f"{TITLE}", f"({summary.get('entropy_note', '')})", ""]
    if "run_wall_seconds" in summary:
        lines.append(f"config {summary.get('config')}: runs took {summary['run_wall_seconds']} s wall time")
        lines.append("")
    lines.append("Entropy change over training, train probe (test probe), per MLP activation width x depth:")
    for key, v in summary["entropy_change"].items():
        t = summary["test_entropy_change"][key]
        kc = summary["kernel_change"][key]
        verdict = "compression" if v["n_fell"] > v["n_seeds"] / 2 else "structure formation" if v["n_rose"] > v["n_seeds"] / 2 else "mixed"
        lines.append(
            f"  {key:<12} dS mean {v['mean']:+.3f} (test {t['mean']:+.3f}); fell in {v['n_fell']}/{v['n_seeds']} seeds, "
            f"rose in {v['n_rose']}/{v['n_seeds']} -> {verdict}; kernel distance {kc['kernel_distance_init']:.4f}, "
            f"rel. change {kc['relative_change_init']:.3g}; loss ratio <= {summary['loss_ratio'][key]:.3f}"
        )
    lines += ["", "Tr K(0) vs width (log-log fit, seed mean):"]
    for key, v in summary["trace0_vs_width"].items():
        lines.append(f"  {key:<16} slope {v['loglog_slope']:.3f}, R^2 {v['r2']:.3f}  (widths {v['widths']}, Tr K(0) {v['trace0']})")
    lines += ["", "Initial entropy S(0) vs depth (line fit; shown, not assumed):"]
    for key, v in summary["entropy0_vs_depth"].items():
        lines.append(f"  {key:<16} S(0) = {v['entropy0']} at depths {v['depths']}; slope {v['slope_per_layer']:+.3f} per layer (R^2 {v['r2']:.2f})")
    if summary.get("architectures"):
        lines += ["", "Other architectures (entropy change per seed, train probe):"]
        for key, v in summary["architectures"].items():
            lines.append(f"  {key:<20} dS {v['entropy_change_per_seed']}, rose in {v['n_rose']}/{v['n_seeds']}; loss ratio <= {v['loss_ratio_max']:.3f}")
    return "\n".join(lines) + "\n"


# =========================================================================== widgets


class Workbench:
    """Notebook controls for the four figures, on cubes from :func:`open_cubes`.

    Controls (ipywidgets, public attributes): ``width``, ``depth``, ``activation`` (the
    fixed values of the F-b1/F-b2 rows), ``seed`` (mean ± std, every seed, one seed),
    ``entropy`` (S or S/lnN), ``trace`` (Tr K or Tr K/N), ``test`` (draw the test probe),
    ``step`` (a slider: the marker in F-b1 and the dot in F-b2), ``b3_step`` (the step of
    F-b3), ``quantity`` (F-b3 colour), ``export_*``.

    Controls redraw in place: each figure is shown once through a
    ``jupyter_bokeh.BokehModel``, and a change assigns new columns (from the ``fig_b*_data``
    functions) to the figure's ``ColumnDataSource``\\ s with the same names and rewrites the
    titles, axis labels, colour ranges and header text that depend on the controls. Only a
    change of the figure's layout (its set of source names, or the F-b3 ``quantity``, whose
    colour mapper differs) builds a new figure; the old ``BokehModel`` is then closed.
    ``figures`` maps figure names to the Bokeh layouts, ``models`` to the displayed
    ``BokehModel`` (``models[name]._model is figures[name]``), ``views`` to the ipywidgets
    box of each figure.

    >>> wb = Workbench(open_cubes("../data/collective_quick.nc"))  # doctest: +SKIP
    >>> wb.view("F-b1")                                              # doctest: +SKIP
    """

    def __init__(self, cubes: Mapping[str, Any], *, figures_dir: str | os.PathLike[str] = "figures"):
        import ipywidgets as w

        if "mlp" not in cubes:
            raise ValueError(f"cubes must hold an 'mlp' cube, got {sorted(cubes)}")
        self.cubes = dict(cubes)
        self.figures_dir = Path(figures_dir)
        mlp = self.cubes["mlp"]
        scale = self.cubes.get("scale", mlp)
        steps = [int(s) for s in scale["step"].values]
        seeds = [int(s) for s in mlp["seed"].values] if "seed" in mlp.dims else []
        self.width = w.Dropdown(options=[int(v) for v in mlp["width"].values], description="width")
        self.depth = w.Dropdown(options=[int(v) for v in mlp["depth"].values], description="depth")
        self.activation = w.ToggleButtons(options=[(_label_act(a), str(a)) for a in mlp["activation"].values], description="activation",
                                          style={"button_width": "70px"})
        self.seed = w.Dropdown(options=[("mean ± std", "mean"), ("every seed", "all")] + [(f"seed {s}", s) for s in seeds],
                               value="mean", description="seeds")
        self.entropy = w.ToggleButtons(options=[("S [nat]", "S"), ("S / ln N", "S/lnN")], description="entropy",
                                       style={"button_width": "80px"})
        self.trace = w.ToggleButtons(options=[("Tr K", "TrK"), ("Tr K / N", "TrK/N")], description="trace",
                                     style={"button_width": "80px"})
        self.test = w.Checkbox(value=True, description="test probe (light)")
        mlp_steps = [int(s) for s in mlp["step"].values]
        self.step = w.SelectionSlider(options=[(str(s), s) for s in mlp_steps], value=mlp_steps[0], description="step",
                                      continuous_update=True, layout=w.Layout(width="480px"))
        self.b3_step = w.SelectionSlider(options=[(str(s), s) for s in steps], value=steps[-1], description="step",
                                         continuous_update=True, layout=w.Layout(width="480px"))
        self.quantity = w.Dropdown(options=[(v[0], k) for k, v in B3_QUANTITIES.items()], value="dS", description="colour")
        self.export_figure = w.Dropdown(options=["F-b1", "F-b2", "F-b3", "F-b4"], description="figure", layout=w.Layout(width="200px"))
        self.export_format = w.Dropdown(options=[("PNG", "png"), ("SVG", "svg"), ("HTML", "html")], description="format",
                                        layout=w.Layout(width="170px"))
        self.export_button = w.Button(description="Export", icon="download", button_style="primary")
        self.export_status = w.HTML(value="")
        self.figures: dict[str, Any] = {}
        self.models: dict[str, Any] = {}
        self._layouts: dict[str, Any] = {}  # figure name -> the layout key it was built with
        self._index: dict[str, dict[str, Any]] = {}  # figure name -> its named models (see _index_of)
        self.views = {name: w.Box() for name in ("F-b1", "F-b2", "F-b3", "F-b4")}
        if "transformer" not in self.cubes and "cnn" not in self.cubes:
            self.export_figure.options = ["F-b1", "F-b2", "F-b3"]
        self._build_all()
        for ctl in (self.width, self.depth, self.activation):
            ctl.observe(lambda _: self._update("F-b1", "F-b2"), "value")
        for ctl in (self.seed, self.test):  # F-b3 is a mean over seeds of the train probe
            ctl.observe(lambda _: self._update("F-b1", "F-b2", "F-b4"), "value")
        for ctl in (self.entropy, self.trace):
            ctl.observe(lambda _: self._update("F-b1", "F-b2", "F-b3", "F-b4"), "value")
        self.step.observe(self._on_step, "value")
        self.b3_step.observe(self._on_b3_step, "value")
        self.quantity.observe(lambda _: self._update("F-b3"), "value")
        self.export_button.on_click(self._on_export)
        self.controls = w.VBox([
            w.HBox([self.activation, self.width, self.depth]),
            w.HBox([self.seed, self.test]),
            w.HBox([self.entropy, self.trace]),
        ])
        self.export_box = w.VBox([w.HBox([self.export_figure, self.export_format, self.export_button]), self.export_status])

    # ------------------------------------------------------------------ building

    def _kw(self) -> dict[str, Any]:
        return dict(seed=self.seed.value, entropy=self.entropy.value, trace=self.trace.value, test=self.test.value)

    def _rows(self) -> dict[str, Any]:
        return dict(width=self.width.value, depth=self.depth.value, activation=self.activation.value)

    def _has_b4(self) -> bool:
        return "transformer" in self.cubes or "cnn" in self.cubes

    def _build(self, name: str) -> Any:
        mlp = self.cubes["mlp"]
        if name == "F-b1":
            return fig_b1(mlp, **self._rows(), **self._kw(), step_marker=self.step.value)
        if name == "F-b2":
            return fig_b2(mlp, **self._rows(), **self._kw(), step=self.step.value)
        if name == "F-b3":
            return fig_b3(self.cubes.get("scale", mlp), self.quantity.value, step=self.b3_step.value,
                          entropy=self.entropy.value, trace=self.trace.value)
        if not self._has_b4():
            return None
        return fig_b4(self.cubes, **self._kw(), missing_seed="mean")

    def _layout_key(self, name: str) -> Any:
        """What fixes a figure's structure beyond its source names: F-b3's quantity picks
        the colour mapper (linear/log) and palette, which cannot change in place."""
        return self.quantity.value if name == "F-b3" else None

    def _data(self, name: str) -> dict[str, dict[str, list]]:
        """The columns of every named source of figure ``name`` at the current settings."""
        mlp = self.cubes["mlp"]
        if name == "F-b1":
            return fig_b1_data(mlp, **self._rows(), **self._kw())
        if name == "F-b2":
            data = fig_b2_data(mlp, **self._rows(), **self._kw(), step=self.step.value)
            # fig_b2 draws its lines with empty band sources beside them
            data.update({k[: -len("-lines")] + "-bands": _empty_bands() for k in list(data) if k.endswith("-lines")})
            return data
        if name == "F-b3":
            return fig_b3_data(self.cubes.get("scale", mlp), self.quantity.value, step=self.b3_step.value,
                               entropy=self.entropy.value, trace=self.trace.value)
        return fig_b4_data(self.cubes, **self._kw(), missing_seed="mean")

    @staticmethod
    def _index_of(fig: Any) -> dict[str, Any]:
        """One walk over a built figure: ``sources`` (name -> ColumnDataSource), ``panels``
        (``"b1-{row}-{col}"`` etc. -> the plot drawing ``"…-lines"``, and F-b3's plots by
        name), ``mappers`` (colour mappers), ``spans`` (the named step markers). Looking each
        name up with ``select_one`` walks the whole model graph every time."""
        from bokeh.models import ColorMapper, ColumnDataSource, GlyphRenderer, Plot, Span

        index: dict[str, Any] = {"sources": {}, "panels": {}, "mappers": [], "spans": []}
        for m in fig.references():
            if isinstance(m, ColumnDataSource) and m.name:
                index["sources"][m.name] = m
            elif isinstance(m, ColorMapper):
                index["mappers"].append(m)
            elif isinstance(m, Span) and str(m.name).startswith("b1-"):
                index["spans"].append(m)
            elif isinstance(m, Plot):
                if m.name:
                    index["panels"][m.name] = m
                for r in m.renderers:
                    name = getattr(r.data_source, "name", None) if isinstance(r, GlyphRenderer) else None
                    if name and name.endswith("-lines"):
                        index["panels"][name[: -len("-lines")]] = m
        return index

    def _assign(self, name: str, data: Mapping[str, Mapping[str, list]]) -> None:
        """``source.data = columns`` for each named source of figure ``name``."""
        sources = self._index[name]["sources"]
        for key, cols in data.items():
            sources[key].data = dict(cols)

    @staticmethod
    def _close(model: Any) -> None:
        """Close a replaced ``BokehModel`` and drop its figure from its document (so the
        second ``close()`` ipywidgets makes on garbage collection finds nothing to undo)."""
        doc, fig = model._document, model._model
        model.close()
        if doc is not None and fig in doc.roots:
            doc.remove_root(fig)

    def _rebuild(self, *names: str) -> None:
        """Build new figures (and models) for ``names``; close the models they replace."""
        from jupyter_bokeh import BokehModel

        for name in names:
            fig = self._build(name)
            if fig is None:
                continue
            old = self.models.get(name)
            self.figures[name] = fig
            self._layouts[name] = self._layout_key(name)
            self._index[name] = self._index_of(fig)
            self.models[name] = BokehModel(fig)
            self.views[name].children = (self.models[name],)
            if old is not None:
                self._close(old)

    def _update(self, *names: str) -> None:
        """Redraw ``names`` at the current settings in place (same figure, same model):
        new source columns, titles, axis labels, colour ranges and header text. A figure
        whose layout no longer fits (source names or layout key differ) is rebuilt."""
        for name in names:
            if name == "F-b4" and not self._has_b4():
                continue
            fig = self.figures.get(name)
            data = self._data(name)
            if fig is None or self._layouts.get(name) != self._layout_key(name) or set(data) != set(self._index[name]["sources"]):
                self._rebuild(name)
                continue
            doc = fig.document
            if doc is not None:  # one batch of changes for the page
                doc.hold("combine")
            try:
                self._assign(name, data)
                self._relabel(name, fig)
            finally:
                if doc is not None:
                    doc.unhold()

    def _relabel(self, name: str, fig: Any) -> None:
        """The texts of figure ``name`` that depend on the controls (as its builder writes them)."""
        ev, tv, seed = self.entropy.value, self.trace.value, self.seed.value
        mlp = self.cubes["mlp"]
        head = fig.children[0]
        if name in ("F-b1", "F-b2"):
            pairs = _b1_pairs(mlp, self.width.value, self.depth.value, self.activation.value)
            panels = self._index[name]["panels"]
            prefix, cols = ("b1", _COLUMNS) if name == "F-b1" else ("b2", ("entropy", "trace"))
            for row in _ROWS:
                title = _row_title(name, row, pairs[row][0], pairs[row][-1])
                for j, col in enumerate(cols):
                    panel = panels[f"{prefix}-{row}-{col}"]
                    panel.title.text = title if j == 0 else ""
                    panel.yaxis[0].axis_label = _column_vars(col, ev, tv)[2]
            head.text = _header(name, mlp, ev, tv, seed)
        elif name == "F-b3":
            scale = self.cubes.get("scale", mlp)
            q = self.quantity.value
            steps = scale["step"].values
            st = int(steps[np.abs(steps - int(self.b3_step.value)).argmin()])
            lo, hi = _b3_range(scale, q, ev, tv)
            self._retitle_b3(scale, q, st)
            for mapper in self._index[name]["mappers"]:  # one quantity row: one mapper
                mapper.update(low=lo, high=hi)
            head.text = _header("F-b3", scale, ev, tv)
        else:
            for key, panel in self._index[name]["panels"].items():
                col = key.rsplit("-", 1)[1]
                panel.yaxis[0].axis_label = _column_vars(col, ev, tv)[2]
            head.text = _header("F-b4", None, ev, tv, seed, b4_seed_fallbacks(self.cubes, seed, "mean"))

    def _build_all(self) -> None:
        self._rebuild("F-b1", "F-b2", "F-b3", "F-b4")

    def _on_step(self, _: Any) -> None:
        """In place: move the F-b1 markers and the F-b2 points."""
        st = int(self.step.value)
        for span in self._index["F-b1"]["spans"]:
            span.location = float(st + 1)
            span.visible = True
        b2 = fig_b2_data(self.cubes["mlp"], **self._rows(), **self._kw(), step=st)
        self._assign("F-b2", {k: v for k, v in b2.items() if k.endswith("-marker")})

    def _on_b3_step(self, _: Any) -> None:
        """In place: the F-b3 cells (and titles) at the chosen step."""
        st = int(self.b3_step.value)
        q = self.quantity.value
        if q in ("S", "dS"):
            scale = self.cubes.get("scale", self.cubes["mlp"])
            self._assign("F-b3", fig_b3_data(scale, q, step=st, entropy=self.entropy.value, trace=self.trace.value))
            self._retitle_b3(scale, q, st)

    def _retitle_b3(self, scale: Any, q: str, st: int) -> None:
        """F-b3's panel titles (as :func:`fig_b3` writes them) for quantity ``q`` at step ``st``."""
        panels = self._index["F-b3"]["panels"]
        for act in scale["activation"].values.tolist():
            if f"b3-{q}-{act}" in panels:
                panels[f"b3-{q}-{act}"].title.text = f"{_label_act(act)}: {_b3_title(q, st)}"

    # ------------------------------------------------------------------ views

    def view(self, name: str) -> Any:
        """The widget box of one figure with the controls it reacts to."""
        import ipywidgets as w

        if name not in self.views:
            raise ValueError(f"name must be one of {list(self.views)}, got {name!r}")
        if name in ("F-b1", "F-b2"):
            return w.VBox([self.controls, self.step, self.views[name]])
        if name == "F-b3":
            return w.VBox([w.HBox([self.quantity, self.entropy, self.trace]), self.b3_step, self.views[name]])
        return w.VBox([w.HBox([self.seed, self.test]), w.HBox([self.entropy, self.trace]), self.views[name]])

    # ------------------------------------------------------------------ export

    def export(self, figure: str | None = None, format: str | None = None) -> Path:
        """Write one figure as shown (current settings) under ``figures_dir``."""
        from ntkbench import plots

        figure = figure or self.export_figure.value
        format = format or self.export_format.value
        if figure not in self.figures:
            raise ValueError(f"figure must be one of {list(self.figures)}, got {figure!r}")
        path = plots.export(self.figures[figure], self.figures_dir / f"collective-{figure}", format)
        self.export_status.value = f"wrote <code>{path}</code>"
        return path

    def _on_export(self, _: Any) -> None:
        import html

        self.export_status.value = "exporting …"
        try:
            self.export()
        except Exception as exc:  # shown in the page, not hidden in a log
            self.export_status.value = f"<span style='color:#b00020'>export failed: {html.escape(str(exc))}</span>"


class RerunPanel:
    """Rerun the quick MLP experiment with chosen settings, with a progress bar; show F-b1
    of the result when done.

    Controls: ``widths``, ``depths``, ``seeds`` (comma-separated integers),
    ``activations``, ``n_train`` (the data budget), ``lr``, ``steps``, ``probe``, ``out``
    and a Run button; the run is a
    :class:`ntkbench.widgets.RunPanel` (a background thread, in-process
    :func:`ntkbench.sweep`, resumable) whose progress bar counts finished runs.

    >>> panel = RerunPanel(out="runs/collective-rerun")  # doctest: +SKIP
    >>> panel.run()                                       # doctest: +SKIP
    """

    def __init__(self, out: str | os.PathLike[str] = "runs/collective-rerun", *, widths: str = "8, 128", depths: str = "1, 6",
                 seeds: str = "0", activations: Sequence[str] = ("relu",), steps: int = 300, lr: float = 0.1, probe: int = 200,
                 n_train: int = 500):
        import ipywidgets as w

        self.out = Path(out)
        self.widths = w.Text(value=widths, description="widths")
        self.depths = w.Text(value=depths, description="depths")
        self.seeds = w.Text(value=seeds, description="seeds")
        self.activations = w.SelectMultiple(options=[("ReLU", "relu"), ("tanh", "tanh")], value=tuple(activations),
                                            description="activation", rows=2)
        self.steps = w.BoundedIntText(value=steps, min=1, max=100_000, description="steps")
        self.lr = w.BoundedFloatText(value=lr, min=1e-5, max=10.0, step=0.01, description="SGD lr")
        self.probe = w.BoundedIntText(value=probe, min=2, max=500, description="probe N")
        self.n_train = w.BoundedIntText(value=n_train, min=2, max=1500, description="train N")
        self.button = w.Button(description="Run", icon="play", button_style="success")
        self.status = w.HTML(value="")
        self.panel_box = w.Box()
        self.output = w.Box()
        self.panel: Any = None
        self.result: Any = None
        self.button.on_click(lambda _: self.start())
        self.widget = w.VBox([
            w.HBox([self.widths, self.depths, self.seeds]),
            w.HBox([self.activations, w.VBox([self.n_train, self.steps]), w.VBox([self.lr, self.probe])]),
            w.HBox([self.button, self.status]),
            self.panel_box,
            self.output,
        ])

    @staticmethod
    def _ints(text: str, name: str) -> list[int]:
        try:
            values = [int(t) for t in text.replace(";", ",").split(",") if t.strip()]
        except ValueError:
            raise ValueError(f"{name} must be comma-separated integers, got {text!r}") from None
        if not values or any(v < (0 if name == "seeds" else 1) for v in values):
            raise ValueError(f"{name} must be comma-separated {'non-negative' if name == 'seeds' else 'positive'} integers, got {text!r}")
        return sorted(set(values))

    def config(self) -> dict[str, Any]:
        """The sweep config of the current settings (validated by the sweep)."""
        base = configs("quick")["mlp"]
        base["train"]["steps"] = int(self.steps.value)
        base["train"]["lr"] = float(self.lr.value)
        base["data"]["n_train"] = int(self.n_train.value)
        base["record"]["probe"] = min(int(self.probe.value), int(self.n_train.value))
        base["data"]["n_test"] = max(int(self.probe.value), base["data"]["n_test"])
        acts = list(self.activations.value) or ["relu"]
        base["grid"] = {
            "activation": acts,
            "depth": self._ints(self.depths.value, "depths"),
            "width": self._ints(self.widths.value, "widths"),
            "seed": self._ints(self.seeds.value, "seeds"),
        }
        return base

    def _make_panel(self) -> Any:
        from ntkbench.widgets import RunPanel

        self.panel = RunPanel(self.config(), self.out, explore=False)
        self.panel_box.children = (self.panel.widget,)
        return self.panel

    def _finish(self, panel: Any) -> None:
        from jupyter_bokeh import BokehModel

        try:
            cube = panel.run()
        except BaseException as exc:  # noqa: BLE001 - shown in the panel
            self.status.value = f"<span style='color:#b00020'>{type(exc).__name__}: {exc}</span>"
            return
        self.result = cube
        if "activation" in cube.dims and "depth" in cube.dims and "width" in cube.dims:
            fig = fig_b1(cube, activation=str(cube["activation"].values[0]))
            self.output.children = (BokehModel(fig),)
        self.status.value = "done"

    def start(self) -> None:
        """Start the run in the background (the Run button)."""
        try:
            panel = self._make_panel()
        except (ValueError, TypeError) as exc:
            self.status.value = f"<span style='color:#b00020'>{exc}</span>"
            return
        self.status.value = "running …"
        panel.start()
        threading.Thread(target=self._finish, args=(panel,), daemon=True, name="collective-rerun").start()

    def run(self, timeout: float | None = None) -> Any:
        """Run with the current settings and wait; return the cube (raises on failure)."""
        panel = self._make_panel()
        cube = panel.run(timeout)
        self.result = cube
        self._finish(panel)
        return cube

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
