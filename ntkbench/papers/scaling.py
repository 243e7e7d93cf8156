"""Beyond Scaling Curves: Internal Dynamics of Neural Networks Through the NTK Lens (2025).

The paper's claims: test loss follows power laws in the data size D and in width; two
setups can share a scaling exponent while their eNTK moves in *opposite* directions during
training (so loss curves alone do not tell the dynamics apart); and as width grows the
network approaches its kernel limit and loses feature learning.

Experiments (see :data:`CONFIGS`):

- ``data_mse`` / ``data_ce``: an MLP (128 × 2, Adam, full batch) on scikit-learn's digits
  trained with MSE or with cross-entropy, D ∈ {32 … 1024} × seeds; the eNTK of a *fixed*
  probe set (the first 32 training samples, the same for every D) at every recorded step
  (F-c1 data scaling, F-c2 same exponent, opposite dynamics);
- ``width_ntk``: an MLP of depth 2 in NTK parametrization trained by full-batch gradient
  descent at a constant learning rate on a teacher regression, widths 32 … 1024 × seeds;
  the eNTK of the whole training set, its change from initialization and the test loss of
  kernel regression with the initial eNTK (F-c3 lazy limit, F-c4 kernel vs network);
- ``width_mup``: the same widths in µP (``base_width`` = the smallest width) with µP Adam,
  where feature learning should survive the width (our extension, not the paper's claim);
  both width experiments also train each network's linearization with the same optimizer
  for the same steps (``linear_test_loss``, F-c4's fair baseline);
- ``width_sp``: the width law on the data law's task (standard parametrization, Adam,
  cross-entropy on digits, D = 1024, widths 8 … 512), fitted with a bootstrap interval and a
  two-segment fit for the transition (F-c5; :mod:`ntkbench.papers._scaling_width`);
- ``data_mse_traced`` / ``data_ce_traced``: the data experiments' runs recording the traced
  kernel, so the opposite-dynamics verdict is given for both conventions (F-c2's toggle).

What reproduced at this scale and what did not is in ``docs/papers/scaling.md``. Built on
:mod:`ntkbench.papers._base`; the summary is in :mod:`ntkbench.papers._scaling_summary`.

Example
-------
>>> from ntkbench.papers import scaling
>>> scaling.configs("quick")["width_ntk"]["grid"]["width"]  # the widths of the quick run
[32, 64, 128, 256, 512, 1024]

It trains for minutes, hence no doctest (the paper's tests run its small ``test`` config):

>>> cubes = scaling.run("runs/scaling", quick=True)                  # doctest: +SKIP
>>> scaling.summarize(cubes)["width"]["width_ntk"]["slope"]          # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ntkbench import conventions, plots
from ntkbench.papers import _base, _scaling_width, _stats
from ntkbench.papers._base import FigureSpec, at_step, check_choice, config_of, need_cube, put_lines
from ntkbench.papers._scaling_summary import TITLE, format_summary, summarize
from ntkbench.papers._scaling_width import data_law, entropy_dynamics, fig_c5_data, transition, width_law
from ntkbench.plots import FigureData
from ntkbench.widgets import Control, int_list_control, parse_ints, seed_control, step_control

__all__ = [
    "KEY", "TITLE", "CONFIGS", "SETUPS", "PARAMETRIZATIONS", "CHANGES", "BASELINES",  # the paper: scaling
    "configs", "run", "run_cubes", "open_cubes", "figures", "defaults",  # its protocol (configs, runs, cubes)
    "data_fit", "width_fit", "critical_width", "change", "benefit",  # measures and fits
    "width_law", "data_law", "transition", "entropy_dynamics",  # fits with intervals (issue 30)
    "fig_c1_data", "fig_c2_data", "fig_c3_data", "fig_c4_data", "fig_c5_data", "build_lines",  # F-c*
    "FIGURES", "controls", "summarize", "format_summary", "Workbench", "RerunPanel", "rerun_config",  # scaling
]  # fmt: skip

KEY = "scaling"


DATA_MEASURES: list[str] = [
    "eigenvalues",
    "entropy",
    "entropy_normalized",
    "magnitude_entropy",
    "trace",
    "trace_per_sample",
    "loss",
    "test_loss",
    "test_accuracy",
]
WIDTH_MEASURES: list[str] = [
    *_base.PROBE_MEASURES,
    "relative_change_init",
    "kernel_distance_init",
    "loss",
    "test_loss",
    "kernel_test_loss",
    "linear_test_loss",
]

#: data-scaling experiment -> (label, colour)
SETUPS: dict[str, tuple[str, str]] = {"data_mse": ("MSE", "#1f5fa8"), "data_ce": ("cross-entropy", "#c2410c")}
#: width experiment -> (label, colour)
PARAMETRIZATIONS: dict[str, tuple[str, str]] = {
    "width_ntk": ("NTK param., GD", "#1f5fa8"),
    "width_mup": ("µP, µP-Adam", "#c2410c"),
}
ENTROPY_VARIANTS = {
    "S": ("entropy", "S [nat]"),
    "S/lnN": ("entropy_normalized", "S / ln N"),
    "S_mag": ("magnitude_entropy", "magnitude entropy [nat]"),
}
TRACE_VARIANTS = {"TrK/NC": "Tr K / (N·C)", "TrK/N": "Tr K / N", "TrK": "Tr K"}
#: feature-learning measure -> label (all relative to the kernel at initialization)
CHANGES: dict[str, str] = {
    "relative_change": "‖K_T − K_0‖_F / ‖K_0‖_F",
    "kernel_distance": "1 − alignment(K_T, K_0)",
    "trace_change": "|Tr K_T − Tr K_0| / Tr K_0",
    "entropy_change": "|S_T − S_0| [nat]",
}
TOLERANCES = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
#: F-c4's kernel baseline -> what it is
BASELINES: dict[str, str] = {
    "lazy": "kernel regression with the NTK-parametrization K_0 (the kernel limit)",
    "own": "kernel regression with each network's own K_0",
    "linear": "the linearized network trained with the same optimizer for the same steps",
}
#: which kernel a cube's probe measures are of: the data experiments record the full one (as
#: the authors' code does); older cubes and the width experiments (one output: the same) the traced
_PROBE_NOTES = {
    "full": "full eNTK ((N·C) × (N·C), the authors' kernel)",
    "traced": "traced eNTK (sum over the C outputs)",
}


# =========================================================================== configs


_DATA_RECORD = {"every": "log", "log_points": 10, "kernel": "full"}


def _data_cfg(loss: str, n_trains: list[int], seeds: list[int], *, steps: int = 300, data: str = "digits"):
    label = SETUPS[f"data_{loss}"][0]
    return {
        "title": f"scaling: test loss vs data size D, MLP 128×2 trained with {label}",
        "paper": KEY,
        "seed": 0,
        "model": {"name": "mlp", "width": 128, "depth": 2, "activation": "relu"},
        "data": {"name": data, "n_train": max(n_trains), "n_test": 500, "seed": 0},
        "train": {"optimizer": "adam", "lr": 1e-3, "steps": steps, "batch_size": "full", "loss": loss},
        # a fixed probe set: the first 32 training samples are the same for every D
        # the full (N·C) × (N·C) kernel as the authors' code measures it: S over N·C eigenvalues
        "record": {**_DATA_RECORD, "probe": min(32, *n_trains), "measures": list(DATA_MEASURES)},
        "grid": {"n_train": list(n_trains), "seed": list(seeds)},
    }


def _width_cfg(par: str, widths: list[int], seeds: list[int], *, n: int = 256, steps: int | None = None):
    ntk = par == "ntk"
    model = {"name": "mlp", "width": min(widths), "depth": 2, "activation": "relu", "parametrization": par}
    if not ntk:
        model["base_width"] = min(widths)  # µP equals standard parametrization at the smallest width
    return {
        "title": f"scaling: width toward the kernel limit, {PARAMETRIZATIONS['width_' + par][0]}",
        "paper": KEY,
        "seed": 0,
        "model": model,
        "data": {"name": "teacher", "n_train": n, "n_test": 500, "seed": 0},
        # NTK parametrization: a learning rate constant in width, full-batch gradient
        # descent (lr·λ_max/N ≈ 1.6 < 2 at initialization for every width)
        "train": {"optimizer": "sgd", "lr": 1.0, "steps": steps or 1000, "batch_size": "full", "loss": "mse"}
        if ntk
        else {"optimizer": "adam", "lr": 0.01, "steps": steps or 250, "batch_size": "full", "loss": "mse"},
        "record": {"every": "log", "log_points": 12, "probe": n, "measures": list(WIDTH_MEASURES)},
        "grid": {"width": list(widths), "seed": list(seeds)},
    }


def _with_width_law(
    exps: dict[str, dict[str, Any]], widths: list[int], seeds: list[int], n: int, *, traced: bool = True
) -> dict:
    """``exps`` with ``width_sp`` (the width law on the cross-entropy data experiment's task,
    D = ``n``) and, if ``traced``, the traced twins of its data experiments."""
    out = dict(exps)
    for s, twin in _scaling_width.TRACED.items():
        if traced:
            out[twin] = _scaling_width.traced_cfg(exps[s])
    out["width_sp"] = _scaling_width.sp_cfg(exps["data_ce"], widths, seeds, n_train=n)
    return out


def _make_configs() -> dict[str, dict[str, dict[str, Any]]]:
    ds_quick = [32, 64, 128, 256, 512, 1024]
    w_quick = [32, 64, 128, 256, 512, 1024]
    full_ds = [32, 64, 128, 256, 512, 1024]
    return {
        "quick": _with_width_law(
            {
                "data_mse": _data_cfg("mse", ds_quick, [0, 1, 2]),
                "data_ce": _data_cfg("ce", ds_quick, [0, 1, 2]),
                "width_ntk": _width_cfg("ntk", w_quick, [0, 1, 2]),
                "width_mup": _width_cfg("mup", w_quick, [0, 1, 2]),
            },
            [8, 16, 32, 64, 128, 256, 512],
            [0, 1, 2],
            1024,
        ),
        # the test suite's size
        "test": _with_width_law(
            {
                "data_mse": _data_cfg("mse", [32, 128, 512], [0, 1], steps=200),
                "data_ce": _data_cfg("ce", [32, 128, 512], [0, 1], steps=200),
                "width_ntk": _width_cfg("ntk", [32, 128, 512], [0, 1], n=128, steps=500),
            },
            [8, 32, 128],
            [0, 1],
            256,
            traced=False,  # the shipped quick cube's twins are tested; these would add a minute
        ),
        # the paper's ranges as far as this machine goes: 8 widths 16 … 2048, 5 seeds
        "full": _with_width_law(
            {
                "data_mse": _data_cfg("mse", full_ds, list(range(5)), steps=500),
                "data_ce": _data_cfg("ce", full_ds, list(range(5)), steps=500),
                "width_ntk": _width_cfg("ntk", [16, 32, 64, 128, 256, 512, 1024, 2048], list(range(5))),
                "width_mup": _width_cfg("mup", [16, 32, 64, 128, 256, 512, 1024, 2048], list(range(5))),
            },
            [8, 16, 32, 64, 128, 256, 512, 1024, 2048],
            list(range(5)),
            1024,
        ),
    }


#: name -> experiment -> sweep config (``quick``, ``test`` and ``full``)
CONFIGS: dict[str, dict[str, dict[str, Any]]] = _make_configs()


_paper = _base.Paper(__name__)
#: the wrappers every paper has (:class:`ntkbench.papers._base.Paper`): ``configs(name)``,
#: ``run_cubes(out, config)`` (``out/runs-<experiment>``, resumable), ``run(out, quick)``
#: (``ntkbench reproduce scaling``), ``open_cubes(path)``, ``figures(cubes, **settings)`` and
#: ``defaults(cubes)`` (the controls' defaults, no step marker)
configs, run_cubes, run = _paper.configs, _paper.run_cubes, _paper.run
open_cubes, figures, defaults = _paper.open_cubes, _paper.figures, _paper.defaults


# =========================================================================== measures and fits


def _n_outputs(ds: Any) -> int:
    """C, the number of network outputs of a cube's runs (10 for digits, d_out for a teacher)."""
    data = config_of(ds).get("data", {})
    if data.get("name") == "teacher":
        return int(data.get("d_out", 1))
    return 10


def entropy_of(ds: Any, variant: str) -> Any:
    """The entropy ``variant`` of :data:`ENTROPY_VARIANTS` of a cube, as a DataArray."""
    check_choice("entropy", variant, ENTROPY_VARIANTS)
    return ds[ENTROPY_VARIANTS[variant][0]]


def trace_of(ds: Any, variant: str) -> Any:
    """Tr K (``"TrK"``), Tr K / N or Tr K / (N·C) (the paper's normalisation) of a cube."""
    check_choice("trace", variant, TRACE_VARIANTS)
    if variant == "TrK":
        return ds["trace"]
    per = ds["trace_per_sample"]
    return per / _n_outputs(ds) if variant == "TrK/NC" else per


def change(ds: Any, measure: str = "relative_change") -> Any:
    """A feature-learning measure of :data:`CHANGES` at every recorded step (0 at step 0):
    the relative change ‖K_t − K_0‖_F/‖K_0‖_F, the kernel distance 1 − alignment, the
    relative trace change or the absolute entropy change from initialization."""
    check_choice("measure", measure, CHANGES)
    if measure == "relative_change":
        return ds["relative_change_init"]
    if measure == "kernel_distance":
        return ds["kernel_distance_init"]
    if measure == "trace_change":
        tr = ds["trace"]
        return abs(tr - tr.isel(step=0)) / tr.isel(step=0)
    s = ds["entropy"]
    return abs(s - s.isel(step=0))


def data_fit(ds: Any, var: str = "test_loss") -> dict[str, float]:
    """Power-law fit ``var(D) = a · D^b`` of the final ``var`` (mean over seeds) of a
    data-scaling cube: ``{"prefactor", "exponent", "r2"}``."""
    y = ds[var].isel(step=-1)
    y = _stats.seed_mean(y)
    return _stats.power_fit_dict(ds["n_train"].values, y.values)


def width_fit(ds: Any, measure: str = "relative_change") -> dict[str, float]:
    """Power-law fit of the final feature-learning ``measure`` (mean over seeds) against
    width: ``{"prefactor", "exponent" (the log–log slope), "r2"}``."""
    y = change(ds, measure).isel(step=-1)
    y = _stats.seed_mean(y)
    return _stats.power_fit_dict(ds["width"].values, y.values)


def critical_width(fit: Mapping[str, float], tolerance: float) -> float:
    """The width at which the fitted change ``a · w^b`` falls to ``tolerance`` (NaN when the
    fit does not fall; :func:`ntkbench.papers._stats.power_law_crossing`)."""
    return _stats.power_law_crossing(fit["prefactor"], fit["exponent"], tolerance)


_SE_BAND = "mean ± standard error over seeds"


def _fit_line(lines: dict, bands: dict, x: np.ndarray, fit: Mapping[str, float], color: str, label: str) -> None:
    if np.isfinite(fit["exponent"]):
        xf = np.geomspace(x.min(), x.max(), 30)
        plots.add_series(lines, bands, xf, [(fit["prefactor"] * xf ** fit["exponent"], None)], color, label, light=True)


# =========================================================================== F-c1


def fig_c1_data(
    cubes: Mapping[str, Any], *, setup: str = "data_mse", entropy: str = "S", trace: str = "TrK/NC", seed: Any = "mean"
) -> FigureData:
    """Figure data of F-c1 (data scaling) for one ``setup`` of :data:`SETUPS`: the final
    test loss against D with its power-law fit (panel ``"c1-loss"``), and the entropy and
    trace of the fixed probe set's eNTK at initialization and at the end of training
    against D (``"c1-entropy"``, ``"c1-trace"``)."""
    check_choice("setup", setup, SETUPS)
    ds = need_cube(cubes, setup)
    label, color = SETUPS[setup]
    x = np.asarray(ds["n_train"].values, float)
    fit = data_fit(ds)
    data = plots.figure_data(
        "F-c1",
        f"<b>F-c1 data scaling</b> — MLP 128×2 trained with {label} on digits; probe: the first "
        f"{int(config_of(ds).get('record', {}).get('probe', 32))} training samples (the same for every D), "
        f"{_PROBE_NOTES[conventions.of_cube(ds).kernel]}; {_base.seed_text(seed, _SE_BAND)}",
    )
    lines, bands = plots.empty_lines(), plots.empty_bands()
    _base.add_seed_series(lines, bands, x, ds["test_loss"].isel(step=-1), seed, color, f"test loss ({label})")
    _fit_line(lines, bands, x, fit, color, f"fit D^{fit['exponent']:.2f}, R² {fit['r2']:.3f}")
    put_lines(data, "c1-loss", lines, bands)
    plots.set_panel(
        data,
        "c1-loss",
        f"test loss ∝ D^{fit['exponent']:.2f} (R² {fit['r2']:.3f})",
        "training set size D",
        f"test loss ({label})",
        log_x=True,
        log_y=True,
    )
    size = "ln (N·C)" if conventions.of_cube(ds).kernel == "full" else "ln N"  # the entropy's kernel size
    for key, da, ylab, log_y in (
        ("c1-entropy", entropy_of(ds, entropy), ENTROPY_VARIANTS[entropy][1].replace("ln N", size), False),
        ("c1-trace", trace_of(ds, trace), TRACE_VARIANTS[trace], True),
    ):
        lines, bands = plots.empty_lines(), plots.empty_bands()
        _base.add_seed_series(lines, bands, x, da.isel(step=0), seed, "#777777", "initialization", log_y=log_y)
        _base.add_seed_series(lines, bands, x, da.isel(step=-1), seed, color, "end of training", log_y=log_y)
        put_lines(data, key, lines, bands)
        plots.set_panel(data, key, f"{ylab} of the probe set", "training set size D", ylab, log_x=True, log_y=log_y)
    data["panels"], data["legend"] = [["c1-loss", "c1-entropy", "c1-trace"]], ["c1-loss", "c1-entropy"]
    data["legend_location"] = "bottom_left"
    return data


# =========================================================================== F-c2


def fig_c2_data(
    cubes: Mapping[str, Any], *, quantity: str = "entropy", seed: Any = "mean", kernel: str = "full"
) -> FigureData:
    """Figure data of F-c2 (same exponent, opposite dynamics): the test loss against D of
    both setups with their fits (``"c2-loss"``), and per setup the change of the probe
    set's eNTK entropy S(t) − S(0) (``quantity="entropy"``) or trace ratio Tr K(t)/Tr K(0)
    (``"trace"``) over training, one line per D (``"c2-data_mse"``, ``"c2-data_ce"``), of
    the full kernel (``kernel="full"``, the data cubes) or of the traced one (``"traced"``,
    their twins ``data_*_traced``)."""
    check_choice("quantity", quantity, {"entropy": 0, "trace": 0})
    check_choice("kernel", kernel, _scaling_width.KERNELS)
    setups = [s for s in SETUPS if s in cubes]
    if not setups:
        raise ValueError(f"F-c2 needs the cubes {list(SETUPS)}; cubes are {sorted(cubes)}")
    dyn = {s: cubes[s] if kernel == "full" else need_cube(cubes, _scaling_width.TRACED[s]) for s in setups}
    note = _PROBE_NOTES[conventions.of_cube(dyn[setups[0]]).kernel]
    data = plots.figure_data(
        "F-c2",
        f"<b>F-c2 similar exponents, opposite internal dynamics</b> — the same MLP on the same data, trained "
        f"with MSE or with cross-entropy; {note} of a fixed probe set; {_base.seed_text(seed, _SE_BAND)}",
    )
    lines, bands = plots.empty_lines(), plots.empty_bands()
    for s in setups:
        ds = cubes[s]
        label, color = SETUPS[s]
        x = np.asarray(ds["n_train"].values, float)
        fit = data_fit(ds)
        _base.add_seed_series(
            lines, bands, x, ds["test_loss"].isel(step=-1), seed, color, f"{label}: D^{fit['exponent']:.2f}"
        )
        _fit_line(lines, bands, x, fit, color, f"{label} fit (R² {fit['r2']:.3f})")
    put_lines(data, "c2-loss", lines, bands)
    plots.set_panel(
        data,
        "c2-loss",
        "test loss vs D (each in its own loss)",
        "training set size D",
        "test loss",
        log_x=True,
        log_y=True,
    )
    for s in setups:
        ds = dyn[s]
        key = f"c2-{s}"
        if quantity == "entropy":
            da, ylab, log_y = ds["entropy"] - ds["entropy"].isel(step=0), "S(t) − S(0) [nat]", False
        else:
            da, ylab, log_y = ds["trace"] / ds["trace"].isel(step=0), "Tr K(t) / Tr K(0)", True
        end = da.isel(step=-1)
        end_mean = float(end.mean())
        lines, bands = plots.empty_lines(), plots.empty_bands()
        x = np.asarray(ds["step"].values, float) + 1.0
        n_trains = [int(v) for v in ds["n_train"].values]
        for n, col in zip(n_trains, plots.palette(len(n_trains), "Viridis256"), strict=True):
            _base.add_seed_series(
                lines, bands, x, da.sel(n_train=n).transpose(..., "step"), seed, col, f"D = {n}", log_y=log_y
            )
        put_lines(data, key, lines, bands)
        verb = "rises" if end_mean > (0 if quantity == "entropy" else 1) else "falls"
        what = "entropy" if quantity == "entropy" else "trace"
        plots.set_panel(
            data, key, f"{SETUPS[s][0]}: the {what} {verb} ({end_mean:+.3g} at the end)" if quantity == "entropy"
            else f"{SETUPS[s][0]}: the {what} {verb} (×{end_mean:.3g} at the end)",
            "step + 1", ylab, log_x=True, log_y=log_y,
        )  # fmt: skip
    data["panels"] = [["c2-loss", *[f"c2-{s}" for s in setups]]]
    data["legend"] = ["c2-loss", f"c2-{setups[0]}"]
    data["legend_location"] = "bottom_left" if quantity == "trace" else "top_left"
    return data


# =========================================================================== F-c3


def fig_c3_data(
    cubes: Mapping[str, Any],
    *,
    measure: str = "relative_change",
    tolerance: float = 0.05,
    parametrization: str = "width_ntk",
    step: int | None = None,
    seed: Any = "mean",
) -> FigureData:
    """Figure data of F-c3 (toward the lazy limit): the final feature-learning ``measure``
    against width for every parametrization, with power-law fits, the ``tolerance`` line
    and the critical width where the NTK fit falls below it (``"c3-change"``); for one
    ``parametrization``, the measure over training per width with a marker at ``step``
    (``"c3-time"``) and the spectrum at ``step`` relative to initialization,
    λ_i(t)/λ_i(0) for the 64 largest (``"c3-spectrum"``: flat at 1 is a frozen kernel)."""
    check_choice("measure", measure, CHANGES)
    check_choice("parametrization", parametrization, PARAMETRIZATIONS)
    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance!r}")
    pars = [p for p in PARAMETRIZATIONS if p in cubes]
    ds = need_cube(cubes, parametrization)
    data = plots.figure_data("F-c3", "")
    lines, bands = plots.empty_lines(), plots.empty_bands()
    fits = {}
    for p in pars:
        c = cubes[p]
        label, color = PARAMETRIZATIONS[p]
        x = np.asarray(c["width"].values, float)
        fits[p] = fit = width_fit(c, measure)
        _base.add_seed_series(
            lines, bands, x, change(c, measure).isel(step=-1), seed, color, f"{label}: slope {fit['exponent']:.2f}"
        )
        _fit_line(lines, bands, x, fit, color, f"{label} fit (R² {fit['r2']:.2f})")
    xs = np.asarray(sorted({float(w) for p in pars for w in cubes[p]["width"].values}))
    plots.add_series(lines, bands, xs, [(np.full(xs.shape, float(tolerance)), None)], "#999999", "tolerance")
    put_lines(data, "c3-change", lines, bands)
    wc = critical_width(fits.get("width_ntk", {"prefactor": np.nan, "exponent": np.nan}), tolerance)
    in_range = bool(np.isfinite(wc) and xs.min() <= wc <= xs.max())
    data["spans"] = {"c3-change-marker": wc if in_range else None}
    if in_range:
        wc_text = f"critical width ≈ {wc:.0f}"
    elif np.isfinite(wc):
        wc_text = f"critical width ≈ {wc:.0f}, extrapolated"
    else:
        wc_text = "no critical width"
    plots.set_panel(
        data,
        "c3-change",
        f"final change vs width; NTK: {wc_text} (tol {tolerance:g})",
        "width",
        CHANGES[measure],
        log_x=True,
        log_y=True,
    )
    widths = [int(w) for w in ds["width"].values]
    cols = plots.palette(len(widths), "Viridis256")
    x = np.asarray(ds["step"].values, float) + 1.0
    chg = change(ds, measure)
    lines, bands = plots.empty_lines(), plots.empty_bands()
    for w, col in zip(widths, cols, strict=True):
        _base.add_seed_series(lines, bands, x, chg.sel(width=w).transpose(..., "step"), seed, col, f"width {w}")
    put_lines(data, "c3-time", lines, bands)
    data["spans"]["c3-time-marker"] = None if step is None else float(at_step(ds["step"], step)) + 1.0
    plots.set_panel(
        data,
        "c3-time",
        f"{PARAMETRIZATIONS[parametrization][0]}: change during training",
        "step + 1",
        CHANGES[measure],
        log_x=True,
        log_y=True,
    )
    ev = ds["eigenvalues"]
    k = min(64, ev.sizes["eigen_index"])
    ev = ev.isel(eigen_index=slice(0, k))
    ratio = at_step(ev, step) / ev.isel(step=0)
    st = int(at_step(ds["step"], step))
    lines, bands = plots.empty_lines(), plots.empty_bands()
    rank = np.arange(1, k + 1, dtype=float)
    for w, col in zip(widths, cols, strict=True):
        _base.add_seed_series(
            lines, bands, rank, ratio.sel(width=w).transpose(..., "eigen_index"), seed, col, f"width {w}"
        )
    put_lines(data, "c3-spectrum", lines, bands)
    plots.set_panel(
        data,
        "c3-spectrum",
        f"spectrum at step {st} / at initialization",
        "rank i",
        "λ_i(t) / λ_i(0)",
        log_x=True,
        log_y=True,
    )
    n = int(config_of(ds).get("data", {}).get("n_train", ds["eigenvalues"].sizes["eigen_index"]))
    data["header"] = (
        f"<b>F-c3 width scaling toward the lazy limit</b> — MLP depth 2 on a teacher regression (N = {n}); "
        f"eNTK of the whole training set; NTK parametrization: full-batch GD at a constant learning rate "
        f"(lazy theory: slope −1/2); {_base.seed_text(seed, _SE_BAND)}"
    )
    data["panels"] = [["c3-change", "c3-time", "c3-spectrum"]]
    data["legend"] = ["c3-change", "c3-time"]
    data["legend_location"] = "bottom_left"
    return data


# =========================================================================== F-c4


def _kernel_baseline(cubes: Mapping[str, Any], p: str, baseline: str) -> Any:
    """The final kernel-regression test loss that experiment ``p``'s networks are compared
    with: ``"lazy"`` -- kernel regression with the NTK-parametrization K_0 of the same
    width and seed (the kernel limit of the architecture; from ``width_ntk``), ``"own"`` --
    with the network's own initial eNTK, ``"linear"`` -- the network linearized at
    initialization and trained with the same optimizer for the same steps (finite time: the
    fair baseline)."""
    if baseline == "linear":
        if "linear_test_loss" not in cubes[p]:
            raise ValueError(f"baseline 'linear' needs linear_test_loss in the {p!r} cube (recorded since issue 30)")
        return cubes[p]["linear_test_loss"].isel(step=-1)
    if baseline == "lazy" and "width_ntk" in cubes:
        return cubes["width_ntk"]["kernel_test_loss"].isel(step=-1)
    return cubes[p]["kernel_test_loss"].isel(step=-1)


def benefit(cubes: Mapping[str, Any], p: str, baseline: str = "lazy") -> Any:
    """Benefit of feature learning of experiment ``p`` at the last step: kernel regression's
    test loss (:func:`_kernel_baseline`) minus the trained network's, over (width, seed)."""
    check_choice("baseline", baseline, BASELINES)
    return _kernel_baseline(cubes, p, baseline) - cubes[p]["test_loss"].isel(step=-1)


_GAP_TITLES = {"lazy": "vs the kernel limit", "own": "vs own K_0", "linear": "vs the linearized net trained alike"}


def fig_c4_data(cubes: Mapping[str, Any], *, baseline: str = "lazy", seed: Any = "mean") -> FigureData:
    """Figure data of F-c4 (kernel vs feature regime): per parametrization, the trained
    network's test loss and the test loss of kernel regression with an initial eNTK (the
    linearized network trained to convergence) against width (``"c4-width_ntk"``,
    ``"c4-width_mup"``: the NTK-parametrization K_0, the kernel limit, and for µP also its
    own K_0), and the benefit of feature learning, kernel − network, against the chosen
    ``baseline`` of :data:`BASELINES` (``"c4-gap"``)."""
    check_choice("baseline", baseline, BASELINES)
    pars = [p for p in PARAMETRIZATIONS if p in cubes]
    if not pars:
        raise ValueError(f"F-c4 needs the cubes {list(PARAMETRIZATIONS)}; cubes are {sorted(cubes)}")
    data = plots.figure_data(
        "F-c4",
        "<b>F-c4 kernel regime vs feature learning</b> — trained network vs kernel regression with an initial "
        "eNTK K_0 (full kernel over samples and outputs, whole training set); benefit against "
        f"{BASELINES[baseline]}; {_base.seed_text(seed, _SE_BAND)}",
    )
    gap_lines, gap_bands = plots.empty_lines(), plots.empty_bands()
    for p in pars:
        ds = cubes[p]
        label, color = PARAMETRIZATIONS[p]
        x = np.asarray(ds["width"].values, float)
        lines, bands = plots.empty_lines(), plots.empty_bands()
        _base.add_seed_series(lines, bands, x, ds["test_loss"].isel(step=-1), seed, color, "trained network")
        lazy = _kernel_baseline(cubes, p, "lazy")
        _base.add_seed_series(
            lines, bands, x, lazy.sel(width=ds["width"]), seed, "#777777", "kernel regression, NTK-param. K_0"
        )
        if p != "width_ntk":
            own = ds["kernel_test_loss"].isel(step=-1)
            _base.add_seed_series(lines, bands, x, own, seed, "#bbbbbb", "kernel regression, own K_0")
        if "linear_test_loss" in ds:
            lin = ds["linear_test_loss"].isel(step=-1)
            _base.add_seed_series(lines, bands, x, lin, seed, "#2a9d55", "linearized net, same optimizer & steps")
        put_lines(data, f"c4-{p}", lines, bands)
        plots.set_panel(data, f"c4-{p}", f"{label}: test loss", "width", "test loss (MSE)", log_x=True, log_y=True)
        _base.add_seed_series(gap_lines, gap_bands, x, benefit(cubes, p, baseline), seed, color, label, log_y=False)
    xs = np.asarray(sorted({float(w) for p in pars for w in cubes[p]["width"].values}))
    plots.add_series(gap_lines, gap_bands, xs, [(np.zeros(xs.shape), None)], "#888888", "no benefit", light=True)
    put_lines(data, "c4-gap", gap_lines, gap_bands)
    plots.set_panel(
        data,
        "c4-gap",
        f"benefit of feature learning ({_GAP_TITLES[baseline]})",
        "width",
        "kernel − network test loss",
        log_x=True,
        log_y=False,
    )
    data["panels"] = [[*[f"c4-{p}" for p in pars], "c4-gap"]]
    data["legend"] = [f"c4-{pars[-1]}", "c4-gap"]
    data["legend_location"] = "top_right"
    return data


build_lines = _base.line_builder(
    (430, 340),
    """Every figure's layout: lines with standard-error bands per panel, fits in lighter
    colour, markers where the figure data has spans.""",
)


# =========================================================================== figures and controls


def controls(cubes: Mapping[str, Any]) -> list[Control]:
    """The Workbench's controls: ``setup`` (F-c1: MSE or cross-entropy), ``entropy`` /
    ``trace`` variants, ``quantity`` (F-c2: entropy or trace), ``measure`` (F-c3's
    feature-learning measure), ``tolerance`` (the critical width's), ``parametrization``
    (F-c3's time and spectrum panels), ``baseline`` (F-c4's kernel: the kernel limit, each
    network's own K_0, or the linearized network trained alike where the cubes record it),
    ``kernel`` (F-c2: the full kernel, or the traced one where the twins are there),
    ``step`` and ``seed`` (mean ± SE, every seed, one)."""
    setups = [s for s in SETUPS if s in cubes] or list(SETUPS)
    pars = [p for p in PARAMETRIZATIONS if p in cubes] or list(PARAMETRIZATIONS)
    first = next((cubes[e] for e in (*SETUPS, *PARAMETRIZATIONS) if e in cubes), None)
    seeds = [int(s) for s in first["seed"].values] if first is not None and "seed" in first.dims else []
    baselines = [("kernel limit", "lazy"), ("own K_0", "own")]
    if any("linear_test_loss" in cubes[p] for p in pars if p in cubes):
        baselines.append(("linearized, trained alike", "linear"))
    kernels = [("full", "full")] + (
        [("traced", "traced")] if all(t in cubes for t in _scaling_width.TRACED.values()) else []
    )
    ctls = [
        Control("setup", "toggle", setups[0], [(SETUPS[s][0], s) for s in setups], button_width="110px"),
        Control("entropy", "toggle", "S", [("S", "S"), ("S / ln N", "S/lnN"), ("magnitude", "S_mag")]),
        Control("trace", "toggle", "TrK/NC", [("Tr K/(N·C)", "TrK/NC"), ("Tr K/N", "TrK/N"), ("Tr K", "TrK")]),
        Control("quantity", "toggle", "entropy", ["entropy", "trace"], description="F-c2"),
        Control("measure", "dropdown", "relative_change", [(v, k) for k, v in CHANGES.items()], width="360px"),
        Control("tolerance", "slider", 0.05, TOLERANCES),
        Control(
            "parametrization", "toggle", pars[0], [(PARAMETRIZATIONS[p][0], p) for p in pars], button_width="140px"
        ),
        Control("baseline", "toggle", "lazy", baselines, description="F-c4"),
        Control("kernel", "toggle", "full", kernels, description="F-c2"),
        seed_control(seeds, band="mean"),
    ]
    if pars[0] in cubes:
        ctls.append(step_control([int(s) for s in cubes[pars[0]]["step"].values]))
    return ctls


def _any(names: Sequence[str]) -> Any:
    return lambda cubes: any(n in cubes for n in names)


def _fig_c1(cubes: Mapping[str, Any], s: Mapping[str, Any]) -> FigureData:
    setup = s["setup"] if s["setup"] in cubes else next(x for x in SETUPS if x in cubes)
    seed = _base.seed_or_mean(cubes, setup, s["seed"])
    return fig_c1_data(cubes, setup=setup, entropy=s["entropy"], trace=s["trace"], seed=seed)


def _c3_par(cubes: Mapping[str, Any], s: Mapping[str, Any]) -> str:
    return s["parametrization"] if s["parametrization"] in cubes else next(p for p in PARAMETRIZATIONS if p in cubes)


#: the figures, each drawn when its experiments' cubes are there
FIGURES: list[FigureSpec] = [
    FigureSpec(
        "F-c1",
        _fig_c1,
        build_lines,
        (("setup", "seed"), ("entropy", "trace")),
        available=_any(list(SETUPS)),
    ),
    FigureSpec(
        "F-c2",
        lambda c, s: fig_c2_data(
            c, quantity=s["quantity"], seed=s["seed"] if s["seed"] in ("mean", "all") else "mean", kernel=s["kernel"]
        ),
        build_lines,
        (("quantity", "seed"), ("kernel",)),
        available=_base.has_cubes(*SETUPS),
    ),
    FigureSpec(
        "F-c3",
        lambda c, s: fig_c3_data(
            c,
            measure=s["measure"],
            tolerance=float(s["tolerance"]),
            parametrization=_c3_par(c, s),
            step=s.get("step"),
            seed=_base.seed_or_mean(c, _c3_par(c, s), s["seed"]),
        ),
        build_lines,
        (("measure", "tolerance"), ("parametrization", "seed"), ("step",)),
        available=_any(list(PARAMETRIZATIONS)),
    ),
    FigureSpec(
        "F-c4",
        lambda c, s: fig_c4_data(c, baseline=s["baseline"], seed=s["seed"] if s["seed"] in ("mean", "all") else "mean"),
        build_lines,
        (("baseline", "seed"),),
        available=_any(list(PARAMETRIZATIONS)),
    ),
    FigureSpec(
        "F-c5",
        lambda c, s: _scaling_width.fig_c5_data(c, seed=s["seed"] if s["seed"] in ("mean", "all") else "mean"),
        build_lines,
        (("seed",),),
        available=_base.has_cubes("width_sp"),
    ),
]


# =========================================================================== widgets


Workbench = _paper.workbench()


def rerun_config(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The sweep config of :class:`RerunPanel`'s settings: the quick width experiment in
    ``parametrization`` (``"ntk"`` or ``"mup"``) at the chosen ``widths``, ``seeds`` (0 …
    seeds-1), training set size ``n_train``, ``steps`` and learning rate ``lr``."""
    par = settings["parametrization"]
    if par not in ("ntk", "mup"):
        raise ValueError(f"parametrization must be 'ntk' or 'mup', got {par!r}")
    widths = parse_ints(settings["widths"], "widths")
    if min(widths) < 1:
        raise ValueError(f"widths must be positive, got {widths}")
    lr = float(settings["lr"])
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    cfg = _width_cfg(par, sorted(set(widths)), list(range(int(settings["seeds"]))), n=int(settings["n_train"]))
    cfg["train"]["steps"] = int(settings["steps"])
    cfg["train"]["lr"] = lr
    return cfg


def _show_c3(cube: Any) -> Any:
    par = "width_mup" if config_of(cube).get("model", {}).get("parametrization") == "mup" else "width_ntk"
    draw = lambda c: build_lines(fig_c3_data({par: c}, parametrization=par))  # noqa: E731
    return _base.result_view(cube, ("width", "seed"), "F-c3", draw)


class RerunPanel(_base.RerunPanel):
    """Rerun the quick width experiment with chosen settings (:func:`rerun_config`), with
    a progress bar, and show F-c3 of the result; one run at a time."""

    def __init__(
        self,
        out: str | os.PathLike[str] = "runs/scaling-rerun",
        *,
        parametrization: str = "ntk",
        widths: str = "32, 128, 512",
        seeds: int = 2,
        n_train: int = 128,
        steps: int = 500,
        lr: float = 1.0,
    ):
        ctls = [
            Control("parametrization", "toggle", parametrization, [("NTK", "ntk"), ("µP", "mup")], button_width="80px"),
            int_list_control("widths", widths),
            Control("seeds", "int", seeds, bounds=(1, 20)),
            Control("n_train", "int", n_train, bounds=(2, 4096)),
            Control("steps", "int", steps, bounds=(1, 100_000)),
            Control("lr", "float", lr, bounds=(1e-6, 100.0)),
        ]
        layout = [["parametrization"], ["widths", "seeds", "n_train"], ["steps", "lr"]]
        super().__init__(rerun_config, ctls, out, layout=layout, show=_show_c3)
