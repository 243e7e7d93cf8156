"""Paper ``scaling``: the width law on the data law's task, and the fair kernel baseline.

The experiment ``width_sp`` trains the data experiments' MLP (depth 2, standard
parametrization, Adam 1e-3, full batch, cross-entropy on digits) at D = 1024 over widths
8 … 512 (64×): the test loss against width on the same task as the data law of
``data_ce`` (whose width is 128: the two share that run). Each run also trains its
network's linearization at initialization with the same Adam, loss and steps
(``linear_test_loss``, :func:`ntkbench.train.linearized_training_predictions`), the fair
kernel baseline of a network trained for finite time.

``data_mse_traced`` / ``data_ce_traced`` rerun the data experiments recording the *traced*
N × N kernel of the same probe, beside the authors' full (N·C) × (N·C) kernel that
``data_mse`` / ``data_ce`` record: the opposite-dynamics claim is judged under both.

This module holds the configs, the fits (:func:`width_law`, :func:`data_law`,
:func:`transition`) and F-c5's figure data; :mod:`ntkbench.papers.scaling` offers them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from ntkbench import plots
from ntkbench.papers import _base, _fits, _stats
from ntkbench.papers._base import check_choice, config_of, need_cube, put_lines
from ntkbench.plots import FigureData

#: what ``width_sp`` records: the probe's full-kernel spectrum, entropy and trace, the
#: kernel's change from initialization, losses, and the linearized network trained alike
SP_MEASURES: list[str] = [
    "eigenvalues",
    "entropy",
    "trace",
    "trace_per_sample",
    "relative_change_init",
    "kernel_distance_init",
    "loss",
    "test_loss",
    "test_accuracy",
    "linear_test_loss",
    "linear_test_accuracy",
]
#: what the traced twins of the data experiments record
TRACED_MEASURES: list[str] = ["eigenvalues", "entropy", "entropy_normalized", "trace", "trace_per_sample"]
#: data experiment -> its traced twin
TRACED = {"data_mse": "data_mse_traced", "data_ce": "data_ce_traced"}
#: the kernel conventions of the entropy dynamics -> label
KERNELS = {"full": "full (N·C) × (N·C) eNTK (the authors')", "traced": "traced N × N eNTK"}
#: F-c5's kernel-change measure
SP_CHANGE = "kernel_distance_init"
_COLOR, _LINEAR, _DATA = "#7b3fa0", "#777777", "#c2410c"


def sp_cfg(data_cfg: Mapping[str, Any], widths: list[int], seeds: list[int], *, n_train: int = 1024) -> dict:
    """``width_sp`` from the cross-entropy data experiment's config ``data_cfg``: the same
    model, data, training and probe at ``n_train`` samples, over ``widths`` × ``seeds``."""
    cfg = copy.deepcopy(dict(data_cfg))
    cfg["title"] = "scaling: test loss vs width, MLP depth 2 (standard param.) trained with Adam on digits"
    cfg["data"]["n_train"] = int(n_train)
    cfg["record"] = {**cfg["record"], "log_points": 8, "measures": list(SP_MEASURES)}
    cfg["grid"] = {"width": list(widths), "seed": list(seeds)}
    return cfg


def traced_cfg(data_cfg: Mapping[str, Any]) -> dict:
    """The traced twin of a data experiment: the same runs, recording the traced kernel."""
    cfg = copy.deepcopy(dict(data_cfg))
    cfg["title"] += " (traced eNTK)"
    cfg["record"] = {**cfg["record"], "kernel": "traced", "measures": list(TRACED_MEASURES)}
    return cfg


# =========================================================================== fits


def _final(ds: Any, var: str, dim: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, values (n_x, n_seeds)) of ``var`` at the last step over ``dim`` and seeds."""
    da = ds[var].isel(step=-1)
    if "seed" not in da.dims:
        da = da.expand_dims(seed=[0])
    return np.asarray(ds[dim].values, float), np.asarray(da.transpose(dim, "seed").values, float)


def width_law(ds: Any, var: str = "test_loss", **kw: Any) -> dict[str, Any]:
    """Power law ``var(width) = a · width^b`` of the final ``var`` (mean over seeds), with a
    bootstrap interval on b (:func:`ntkbench.papers._fits.bootstrap_power_fit`)."""
    return _fits.bootstrap_power_fit(*_final(ds, var, "width"), **kw)


def data_law(ds: Any, var: str = "test_loss", **kw: Any) -> dict[str, Any]:
    """Power law of the final ``var`` against the training set size D, with a bootstrap
    interval on the exponent."""
    return _fits.bootstrap_power_fit(*_final(ds, var, "n_train"), **kw)


def transition(ds: Any, var: str, dim: str = "width", **kw: Any) -> dict[str, Any]:
    """The two-segment (broken) power-law fit of the final ``var`` against ``dim`` with a
    bootstrap interval on the break (:func:`ntkbench.papers._fits.broken_power_fit`)."""
    return _fits.broken_power_fit(*_final(ds, var, dim), **kw)


def entropy_dynamics(cubes: Mapping[str, Any], kernel: str = "full") -> dict[str, Any]:
    """The opposite-dynamics verdict under one kernel convention: per loss the mean entropy
    change S_T − S_0 of the probe and the fraction of runs whose entropy rose, and whether
    MSE rises while cross-entropy falls (``None`` without the cubes)."""
    check_choice("kernel", kernel, KERNELS)
    out: dict[str, Any] = {"kernel": KERNELS[kernel]}
    for s in ("data_mse", "data_ce"):
        name = s if kernel == "full" else TRACED[s]
        if name not in cubes:
            return {**out, "holds": None}
        ds = cubes[name]
        if kernel == "full" and str(ds["entropy"].attrs.get("ntk_kernel", "traced")) != "full":
            return {**out, "holds": None}
        d = np.ravel((ds["entropy"].isel(step=-1) - ds["entropy"].isel(step=0)).values)
        d = d[np.isfinite(d)]  # a diverged run (NaN) is left out; n says how many remain
        if d.size == 0:
            return {**out, "holds": None}
        out[s] = {"mean": _stats.finite(d.mean()), "rose_fraction": _stats.finite(np.mean(d > 0)), "n": int(d.size)}
    out["holds"] = bool(_stats.as_float(out["data_mse"]["mean"]) > 0 > _stats.as_float(out["data_ce"]["mean"]))
    return out


# =========================================================================== F-c5


def _law_text(fit: Mapping[str, Any], var: str) -> str:
    return f"{var}^{fit['exponent']:.2f} [{fit['low']:.2f}, {fit['high']:.2f}]"


def _add_fit(lines: dict, bands: dict, x: np.ndarray, fit: Mapping[str, Any], color: str, label: str) -> None:
    if np.isfinite(fit["exponent"]):
        xf = np.geomspace(x.min(), x.max(), 30)
        plots.add_series(lines, bands, xf, [(fit["prefactor"] * xf ** fit["exponent"], None)], color, label, light=True)


def _add_broken(lines: dict, bands: dict, x: np.ndarray, br: Mapping[str, Any], label: str) -> None:
    if br.get("break") is not None and np.isfinite(br["break"]):
        xf = np.geomspace(x.min(), x.max(), 60)
        plots.add_series(lines, bands, xf, [(_fits.broken_curve(br, xf), None)], "#2a9d55", label, light=True)


def fig_c5_data(cubes: Mapping[str, Any], *, seed: Any = "mean") -> FigureData:
    """Figure data of F-c5 (the width law on the data law's task): the final test loss
    against width with its power-law fit and interval and the two-segment fit
    (``"c5-width"``), the test loss against D of ``data_ce`` on the same task
    (``"c5-data"``), and against width the relative kernel change and the test loss of the
    linearized network trained with the same Adam for the same steps beside the
    network's (``"c5-linear"``)."""
    ds = need_cube(cubes, "width_sp")
    x = np.asarray(ds["width"].values, float)
    n = int(config_of(ds).get("data", {}).get("n_train", 0))
    fit = width_law(ds)
    br = transition(ds, "test_loss")
    data = plots.figure_data(
        "F-c5",
        f"<b>F-c5 width law on the data law's task</b> — MLP depth 2, standard parametrization, Adam 1e-3, "
        f"full batch, cross-entropy on digits, D = {n}; intervals: 95 % bootstrap over seeds; "
        f"{_base.seed_text(seed, 'mean ± standard error over seeds')}",
    )
    lines, bands = plots.empty_lines(), plots.empty_bands()
    _base.add_seed_series(lines, bands, x, ds["test_loss"].isel(step=-1), seed, _COLOR, "test loss")
    _add_fit(lines, bands, x, fit, _COLOR, f"fit {_law_text(fit, 'width')}")
    _add_broken(lines, bands, x, br, f"two segments, break ≈ {br['break']:.0f}" if br.get("break") else "")
    put_lines(data, "c5-width", lines, bands)
    verdict = "break at width " + f"{br['break']:.0f}" if br.get("resolved") else "no break resolved"
    plots.set_panel(
        data, "c5-width", f"test loss ∝ {_law_text(fit, 'width')}; {verdict}", "width",
        "test loss (cross-entropy)", log_x=True, log_y=True,
    )  # fmt: skip
    keys = ["c5-width"]
    if "data_ce" in cubes:
        dc = cubes["data_ce"]
        xd = np.asarray(dc["n_train"].values, float)
        dfit = data_law(dc)
        lines, bands = plots.empty_lines(), plots.empty_bands()
        _base.add_seed_series(lines, bands, xd, dc["test_loss"].isel(step=-1), seed, _DATA, "test loss")
        _add_fit(lines, bands, xd, dfit, _DATA, f"fit {_law_text(dfit, 'D')}")
        put_lines(data, "c5-data", lines, bands)
        w = int(config_of(dc).get("model", {}).get("width", 0))
        plots.set_panel(
            data, "c5-data", f"same task, width {w}: test loss ∝ {_law_text(dfit, 'D')}", "training set size D",
            "test loss (cross-entropy)", log_x=True, log_y=True,
        )  # fmt: skip
        keys.append("c5-data")
    if "linear_test_loss" in ds:
        lines, bands = plots.empty_lines(), plots.empty_bands()
        _base.add_seed_series(lines, bands, x, ds["test_loss"].isel(step=-1), seed, _COLOR, "network")
        _base.add_seed_series(
            lines, bands, x, ds["linear_test_loss"].isel(step=-1), seed, _LINEAR, "linearized network, same Adam"
        )
        put_lines(data, "c5-linear", lines, bands)
        plots.set_panel(
            data, "c5-linear", "network vs its linearization trained alike", "width", "test loss (cross-entropy)",
            log_x=True, log_y=True,
        )  # fmt: skip
        keys.append("c5-linear")
    lines, bands = plots.empty_lines(), plots.empty_bands()
    _base.add_seed_series(lines, bands, x, ds[SP_CHANGE].isel(step=-1), seed, _COLOR, "1 − alignment(K_T, K_0)")
    put_lines(data, "c5-change", lines, bands)
    plots.set_panel(
        data, "c5-change", "kernel distance from initialization (probe, full eNTK)", "width",
        "1 − alignment(K_T, K_0)", log_x=True, log_y=True,
    )  # fmt: skip
    keys.append("c5-change")
    data["panels"], data["legend"] = [keys], [k for k in keys if k != "c5-change"]
    data["legend_location"] = "bottom_left"
    return data
