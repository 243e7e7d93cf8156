"""Spectral Reach: Understanding Neural Scaling as Progress into the Spectral Tail (2026).

The paper splits the squared gradient norm of a batch into three factors, the
loss–network–position (LNP) decomposition ``‖∇L‖² = χ_loss · χ_net · χ_pos``
(:func:`ntkbench.lnp`): the loss term ‖u‖²/B, the network term Tr K/B and the spectral
position χ_pos = uᵀKu/(‖u‖² Tr K), the residual-weighted mean of the eNTK's
trace-normalised eigenvalues. It claims that χ_pos falls during training (learning moves
from the dominant eigen-directions into the spectral tail), that larger models reach
further into the tail and lower loss, and that feature learning raises χ_net and keeps
progress going where frozen features stall.

Experiments (see :data:`CONFIGS`; every run records the probe batch's eNTK spectrum and
the LNP terms on a log-spaced step schedule):

- ``stories``: TinyTransformers of several widths on next-token prediction of the
  generated ``stories`` corpus (F-d1: loss and χ_pos against compute 6·N·D; F-d2);
- ``pixels``: the same widths on next-pixel prediction of the 8×8 digits as sequences of
  quantized grey levels (``digits_pixels``; F-d1, F-d2);
- ``rf``: the controlled random-feature model (:class:`ntkbench.models.RandomFeatures`)
  on regression with a power-law feature spectrum (``random_features``), features frozen
  (only the readout trains: the kernel regime) or trained (a two-layer network), two
  model sizes, full batch on a small training set that is also the probe (F-d3; F-d4: the
  residual's spectral weights w_k over step × eigen-index and χ_pos from the
  eigendecomposition against the kernel-free χ_pos; F-d2 with the independent check).

What reproduced at toy scale and what departed is in ``docs/papers/reach.md``. Built on
:mod:`ntkbench.papers._base`.

Example
-------
The configs are at hand (``quick`` runs in minutes on 2 cores; the paper's tests run ``test``):

>>> from ntkbench.papers import reach
>>> sorted(reach.configs("quick")), reach.configs("quick")["rf"]["grid"]["features"]
(['pixels', 'rf', 'stories'], ['frozen', 'trained'])

Running them trains for minutes, so not as a doctest:

>>> cubes = reach.run("runs/reach", quick=True)              # doctest: +SKIP
>>> reach.summarize(cubes)["scaling"]["stories"]["frontier"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ntkbench import plots
from ntkbench.papers import _base, _reach_power, _stats
from ntkbench.papers._base import FigureSpec, check_choice, config_of, need_cube, put_lines, seed_or_mean
from ntkbench.papers._reach_summary import format_summary, summarize
from ntkbench.plots import FigureData
from ntkbench.widgets import Control, int_list_control, parse_ints, seed_control, step_control

__all__ = [
    "KEY", "TITLE", "CONFIGS", "LM_MEASURES", "RF_MEASURES",  # the paper: spectral reach
    "configs", "run", "run_cubes", "open_cubes", "figures", "defaults",  # its protocol (configs, runs, cubes)
    "compute", "median_index",  # measures
    "fig_d1_data", "build_d1", "fig_d2_data", "fig_d3_data", "build_lines", "fig_d4_data", "build_d4",  # F-d*
    "FIGURES", "controls", "summarize", "format_summary", "Workbench", "RerunPanel", "rerun_config",  # reach
]  # fmt: skip

KEY = "reach"
TITLE = "Spectral Reach: Understanding Neural Scaling as Progress into the Spectral Tail"

#: recorded by every run: the probe's spectrum, the losses and the LNP terms χ_pos, χ_loss, χ_net
_LNP_MEASURES = ["eigenvalues", "loss", "test_loss", "spectral_position", "chi_loss", "chi_net"]
#: recorded by the language-model runs (LNP terms with Hutchinson χ_net, on the training batch)
LM_MEASURES: list[str] = [*_LNP_MEASURES, "chi_net_se", "grad_norm_sq"]
#: recorded by the random-feature runs (one output: exact χ_net and the eigen-view)
RF_MEASURES: list[str] = [*_LNP_MEASURES, "grad_norm_sq", "residual_weights", "spectral_position_eig"]
#: language-model experiment (= the F-d1 data_set setting) -> its label
LM_SETS: dict[str, str] = {
    "stories": "stories (next token)",
    "pixels": "digits as pixel sequences (next pixel)",
    "shakespeare": "Shakespeare (next character)",
}
#: features -> (label, colour)
FEATURES: dict[str, tuple[str, str]] = {
    "frozen": ("frozen features", "#1f5fa8"),
    "trained": ("trained features", "#c2410c"),
}
LNP_TERMS: dict[str, str] = {
    "chi_loss": "χ_loss = ‖u‖²/B",
    "chi_net": "χ_net = Tr K/B",
    "spectral_position": "χ_pos",
    "grad_norm_sq": "‖∇L‖²",
}


# =========================================================================== configs


#: the χ terms on the batch each step trains on, before the step (as the authors' tool)
_LM_RECORD = {"every": "log", "log_points": 9, "lnp_probes": 4, "lnp_batch": "train"}


def _lm(
    data: dict[str, Any], widths: list[int], seeds: list[int], *, steps: int, probe: int, title: str
) -> dict[str, Any]:
    return {
        "title": f"reach: {title}",
        "paper": KEY,
        "seed": 0,
        "model": {"name": "transformer", "width": widths[0], "layers": 1, "heads": 4},
        "data": data,
        "train": {"optimizer": "adam", "lr": 3e-3, "steps": steps, "batch_size": 32, "loss": "ce"},
        "record": {**_LM_RECORD, "probe": probe, "measures": list(LM_MEASURES)},
        "grid": {"width": widths, "seed": seeds},
    }


def _rf(widths: list[int], seeds: list[int], *, n: int, steps: int, n_features: int = 64) -> dict[str, Any]:
    return {
        "title": "reach: random-feature model, frozen vs trained features",
        "paper": KEY,
        "seed": 0,
        "model": {"name": "random_features", "width": widths[0], "activation": "relu", "features": "frozen"},
        "data": {"name": "random_features", "n_train": n, "n_test": 128, "seed": 0, "n_features": n_features},
        "train": {"optimizer": "sgd", "lr": 0.2, "steps": steps, "batch_size": "full", "loss": "mse"},
        # the probe is the whole training set: the batch the LNP terms and w_k are measured on
        "record": {"every": "log", "log_points": 14, "probe": n, "measures": list(RF_MEASURES), "lnp_probes": "exact"},
        "grid": {"features": ["frozen", "trained"], "width": widths, "seed": seeds},
    }


def _stories(n_train: int, context: int) -> dict[str, Any]:
    return {"name": "stories", "n_train": n_train, "n_test": 64, "seed": 0, "context": context}


def _pixels(n_train: int, levels: int) -> dict[str, Any]:
    return {"name": "digits_pixels", "n_train": n_train, "n_test": 64, "seed": 0, "levels": levels}


def _make_configs() -> dict[str, dict[str, dict[str, Any]]]:
    return {
        "quick": {
            "stories": _lm(_stories(2048, 8), [16, 32, 64], [0, 1], steps=300, probe=8, title="TinyTransformer on stories"),
            "pixels": _lm(_pixels(1200, 4), [16, 32, 64], [0, 1], steps=300, probe=4, title="TinyTransformer on digit pixels"),
            "rf": _rf([16, 128], [0, 1, 2, 3], n=128, steps=2000),
        },
        # the test suite's size
        "test": {
            "stories": _lm(_stories(256, 4), [8], [0, 1], steps=40, probe=4, title="TinyTransformer on stories"),
            "rf": _rf([16, 64], [0, 1], n=64, steps=300),
        },
        # as close to the paper as 2 CPU cores allow (see docs/papers/reach.md)
        "full": {
            "stories": _lm(_stories(8192, 16), [16, 32, 64, 128], [0, 1, 2], steps=3000, probe=16, title="TinyTransformer on stories"),
            "pixels": _lm(_pixels(1500, 8), [16, 32, 64, 128], [0, 1, 2], steps=3000, probe=8, title="TinyTransformer on digit pixels"),
            "rf": _rf([16, 64, 256, 1024], list(range(5)), n=256, steps=10000),
        },
        # the size claim at power: 6 Llama-style sizes over 2 decades × 3 seeds, kernel-free
        "power": {
            "shakespeare": _reach_power.power_config({**_stories(16384, 32), "name": "shakespeare", "n_test": 512}, "Shakespeare"),
            "stories": _reach_power.power_config({**_stories(16384, 32), "n_test": 512}, "stories"),
        },
    }  # fmt: skip


#: name -> experiment -> sweep config (``quick``, ``test`` and ``full``)
CONFIGS: dict[str, dict[str, dict[str, Any]]] = _make_configs()


_paper = _base.Paper(__name__)
#: the wrappers every paper has (:class:`ntkbench.papers._base.Paper`): ``configs(name)``,
#: ``run_cubes(out, config)`` (``out/runs-<experiment>``, resumable), ``run(out, quick)``
#: (``ntkbench reproduce reach``), ``open_cubes(path)``, ``figures(cubes, **settings)`` and
#: ``defaults(cubes)`` (the controls' defaults, no step marker)
configs, run_cubes, run = _paper.configs, _paper.run_cubes, _paper.run
open_cubes, figures, defaults = _paper.open_cubes, _paper.figures, _paper.defaults


# =========================================================================== shared by the figures


#: the model behind a cube (:mod:`ntkbench.papers._base`): parameters, training tokens per
#: step and the training compute 6·N·D at every recorded step of a width
n_params, tokens_per_step, compute = _base.n_params, _base.tokens_per_step, _base.compute


def median_index(weights: Any) -> np.ndarray:
    """The median eigen-index of spectral weights w_k (last axis, index 0 = largest
    eigenvalue): the first k with Σ_{j≤k} w_j ≥ ½ of Σ w (NaN where the weights are NaN).

    >>> median_index(np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])).tolist()
    [0.0, 2.0]
    """
    w = np.asarray(weights, float)
    total = np.sum(w, axis=-1, keepdims=True)
    cum = np.cumsum(w, axis=-1) / np.where(total > 0, total, np.nan)
    out = np.sum(cum < 0.5, axis=-1).astype(float)
    return np.where(np.isfinite(total[..., 0]) & (total[..., 0] > 0), out, np.nan)


def _lnp_batch(ds: Any) -> str:  # which batch the LNP terms are of: the one each step trains on, or the probe
    return "training" if config_of(ds).get("record", {}).get("lnp_batch") == "train" else "probe"


def _data_note(ds: Any) -> str:
    cfg = config_of(ds)
    d, m, t, rec = (cfg.get(k, {}) for k in ("data", "model", "train", "record"))
    if m.get("name") in ("transformer", "decoder"):
        extra = f"{d.get('levels')} grey levels" if d.get("name") == "digits_pixels" else f"context {d.get('context')}"
        if m.get("name") == "decoder":
            net, probe = f"Llama-style decoders (layers = width // {m.get('aspect')})", "no kernel"
        else:
            net, probe = f"TinyTransformer {m.get('layers')} layer", f"probe batch {rec.get('probe')}"
        return (
            f"{d.get('name')}, {d.get('n_train')} sequences, {extra}; {net}; "
            f"{t.get('optimizer')} lr {t.get('lr')}, batch {t.get('batch_size')}; {probe}; "
            f"χ terms on the {_lnp_batch(ds)} batch"
        )
    return (
        f"{d.get('name')} ({d.get('n_features')} features), N = {d.get('n_train')}; {t.get('optimizer')} "
        f"lr {t.get('lr')}, full batch; probe = training set"
    )


def _width_colors(widths: Sequence[int]) -> dict[int, str]:
    cols = plots.palette(max(len(widths), 2), "Viridis256")
    return {int(w): c for w, c in zip(widths, cols[: len(widths)], strict=True)}


def _fit_mask(steps: np.ndarray, fit_from: float) -> np.ndarray:
    """Recorded steps a fit uses: step ≥ ``fit_from`` × the last step (and step ≥ 1)."""
    return (steps >= max(1.0, fit_from * float(steps.max()))) & (steps >= 1)


# =========================================================================== F-d1


def fig_d1_data(
    cubes: Mapping[str, Any], *, data_set: str = "stories", seed: Any = "mean", fit_from: float = 0.1
) -> FigureData:
    """Figure data of F-d1: panel ``"d1-loss"`` (training loss against compute 6·N·D per
    width, with power-law fits L = a·C^b per width and of the compute frontier, dashed) and
    panel ``"d1-pos"`` (χ_pos against compute per width). Fits use the recorded steps ≥
    ``fit_from`` × the last step, on the seed mean."""
    check_choice("data_set", data_set, LM_SETS)
    ds = need_cube(cubes, data_set)
    mode = plots.seed_mode(seed, ds)
    widths = [int(w) for w in ds["width"].values]
    colors = _width_colors(widths)
    steps = np.asarray(ds["step"].values, float)
    fit_at = _fit_mask(steps, fit_from)
    data = plots.figure_data(
        "F-d1",
        f"<b>F-d1 scaling laws and spectral position</b> — {LM_SETS[data_set]}; {_data_note(ds)}; "
        f"{_base.seed_text(seed)}; dashed: power-law fits L = a·C^b (steps ≥ {fit_from:g} × last), black: the compute frontier",
    )
    fits: dict[str, list] = {"xs": [], "ys": [], "color": [], "label": []}
    curves = []
    for key, var, log_y in (("d1-loss", _reach_power.loss_of(ds), True), ("d1-pos", "spectral_position", True)):
        lines, bands = plots.empty_lines(), plots.empty_bands()
        for w in widths:
            c = compute(ds, w)
            da = ds[var].sel(width=w)
            traces = plots.seed_traces(da, mode)
            label = f"width {w} ({plots.si_text(n_params(ds, w), '{:.0f}')} params)"
            if key == "d1-loss":
                mean = np.asarray(_stats.seed_mean(da).values, float)
                curves.append((c[fit_at], mean[fit_at]))
                f = _stats.power_fit(c[fit_at], mean[fit_at])
                if f is not None:
                    label += f": b = {f[1]:+.3f}, R² {f[2]:.2f}"
                    plots.add_power_fit(fits, c[fit_at], f, colors[w], label)
            plots.add_series(lines, bands, c, traces, colors[w], label, log_y=log_y)
        put_lines(data, key, lines, bands)
    fx, fy = _stats.frontier(curves) if curves else (np.array([]), np.array([]))
    f = _stats.power_fit(fx, fy)
    if f is not None:
        plots.add_power_fit(fits, fx, f, "#111111", f"frontier: b = {f[1]:+.3f}, R² {f[2]:.2f}")
    data["sources"]["d1-loss-fits"] = fits
    loss_name = "training loss" if _reach_power.loss_of(ds) == "loss" else "test loss"
    plots.set_panel(
        data,
        "d1-loss",
        f"{loss_name} vs compute ({fits['label'][-1] if f is not None else 'no frontier fit'})",
        "compute 6·N·D [FLOP]",
        f"{loss_name} (cross-entropy)",
        log_x=True,
        log_y=True,
    )
    plots.set_panel(
        data,
        "d1-pos",
        "spectral position vs compute",
        "compute 6·N·D [FLOP]",
        f"χ_pos ({_lnp_batch(ds)} batch)",
        log_x=True,
        log_y=True,
    )
    data["panels"], data["legend"] = [["d1-loss"], ["d1-pos"]], ["d1-loss", "d1-pos"]
    return data


def build_d1(data: FigureData, panel_size: tuple[int, int] = (720, 330)) -> Any:
    """The F-d1 layout: lines with seed bands, dashed fit lines on the loss panel."""
    from bokeh.models import ColumnDataSource

    def draw(fig: Any, key: str) -> None:
        plots.lines_and_bands(fig, data, key, legend=True)
        if key == "d1-loss":
            src = ColumnDataSource(dict(data["sources"]["d1-loss-fits"]), name="d1-loss-fits")
            fig.multi_line("xs", "ys", source=src, line_color="color", line_dash="dashed", line_width=1.6)
        # below the plot: the curves fill the corners, and the fit labels are long (beside
        # it they made the figure wider than a laptop's notebook)
        plots.panel_style(fig, legend=True, beside="below")

    return plots.panel_grid(data, draw, panel_size=panel_size, name="F-d1")


# =========================================================================== F-d2


def _rf_series(ds: Any) -> list[tuple[str, int, str]]:
    """(features, width, label) of every random-feature series, frozen first."""
    return [
        (feat, int(w), f"{FEATURES.get(feat, (feat,))[0]}, width {int(w)}")
        for feat in ds["features"].values.tolist()
        for w in ds["width"].values.tolist()
    ]


def _rf_colors(ds: Any) -> dict[tuple[str, int], str]:
    widths = [int(w) for w in ds["width"].values]
    out = {}
    for feat in ds["features"].values.tolist():
        base = FEATURES.get(feat, (feat, "#555555"))[1]
        for i, w in enumerate(widths):
            amount = 0.6 * (1 - i / max(len(widths) - 1, 1))  # the smallest model lightest
            out[(feat, w)] = plots.lighten(base, amount)
    return out


def fig_d2_data(cubes: Mapping[str, Any], *, lnp_data: str = "stories", seed: Any = "mean") -> FigureData:
    """Figure data of F-d2: the LNP terms χ_loss, χ_net, χ_pos, ‖∇L‖² against step + 1
    (panels ``"d2-chi_loss"`` ...), one line per model size, and ``"d2-identity"``: the
    product χ_loss·χ_net·χ_pos over the measured ‖∇L‖² (1 = the identity holds). On
    ``lnp_data="rf"`` the product uses χ_pos from the eigendecomposition, an independent
    check; on the language models χ_pos is the kernel-free ratio and the product checks
    round-off only."""
    check_choice("lnp_data", lnp_data, [*LM_SETS, "rf"])
    ds = need_cube(cubes, lnp_data)
    mode = plots.seed_mode(seed, ds)
    x = np.asarray(ds["step"].values, float) + 1.0
    if lnp_data == "rf":
        colors = _rf_colors(ds)
        series = [(ds.sel(features=f, width=w), colors[(f, w)], lab) for f, w, lab in _rf_series(ds)]
        pos_var = "spectral_position_eig" if "spectral_position_eig" in ds else "spectral_position"
        name = "random-feature model"
    else:
        colors_w = _width_colors([int(w) for w in ds["width"].values])
        series = [(ds.sel(width=w), colors_w[int(w)], f"width {int(w)}") for w in ds["width"].values]
        pos_var = "spectral_position"
        name = LM_SETS[lnp_data]
    check = (
        "χ_pos from the eigendecomposition (independent)"
        if pos_var == "spectral_position_eig"
        else "kernel-free χ_pos (round-off check)"
    )
    se = ""
    if "chi_net_se" in ds and float(ds["chi_net_se"].max()) > 0:
        rel = float(np.nanmax((ds["chi_net_se"] / ds["chi_net"]).values))
        se = f"; χ_net by Hutchinson, relative standard error ≤ {100 * rel:.0f} %"
    data = plots.figure_data(
        "F-d2",
        f"<b>F-d2 the LNP terms</b> — {name}; {_data_note(ds)}; {_base.seed_text(seed)}; identity panel with {check}{se}",
    )
    keys = []
    identity = "|χ_loss·χ_net·χ_pos / ‖∇L‖² − 1|"
    for var, label in (*LNP_TERMS.items(), ("identity", identity)):
        key = f"d2-{var}"
        keys.append(key)
        lines, bands = plots.empty_lines(), plots.empty_bands()
        for sub, color, lab in series:
            if var == "identity":  # the relative error of the identity, floored where it is exactly 0
                da = abs(sub["chi_loss"] * sub["chi_net"] * sub[pos_var] / sub["grad_norm_sq"] - 1).clip(min=1e-9)
                traces = [(y, None) for y, _ in plots.seed_traces(da, mode)]  # round-off has no meaningful band
            else:
                traces = plots.seed_traces(sub[var], mode)
            plots.add_series(lines, bands, x, traces, color, lab, log_y=True)
        put_lines(data, key, lines, bands)
        title = f"identity {identity}" if var == "identity" else label
        plots.set_panel(
            data,
            key,
            title,
            "step + 1",
            "relative error (floor 1e-9)" if var == "identity" else label,
            log_x=True,
            log_y=True,
        )
    data["panels"] = [keys[:3], keys[3:]]
    data["legend"] = ["d2-chi_loss"]
    data["legend_location"] = "bottom_left"
    return data


build_lines = _base.line_builder(
    (400, 300),
    """F-d2 / F-d3 layouts: lines with bands in each panel, markers where the figure data
    has spans, legends in ``data["legend"]``.""",
    "bottom_left",
)


# =========================================================================== F-d3


def fig_d3_data(
    cubes: Mapping[str, Any], *, seed: Any = "mean", width: Any = "all", step: int | None = None
) -> FigureData:
    """Figure data of F-d3 from the ``rf`` cube: training loss, χ_net and χ_pos against
    step + 1 (panels ``"d3-loss"``, ``"d3-chi_net"``, ``"d3-pos"``), frozen features
    (blue) and trained features (orange) side by side, every model size or one ``width``;
    a dashed marker at ``step``."""
    ds = need_cube(cubes, "rf")
    mode = plots.seed_mode(seed, ds)
    widths = [int(w) for w in ds["width"].values]
    if width != "all":
        check_choice("width", int(width), widths)
    colors = _rf_colors(ds)
    x = np.asarray(ds["step"].values, float) + 1.0
    data = plots.figure_data(
        "F-d3",
        f"<b>F-d3 frozen vs trained features</b> — same data, same initial features, same steps; {_data_note(ds)}; "
        f"{_base.seed_text(seed)}; darker = more random features",
    )
    data["spans"] = {}
    for key, var, label in (
        ("d3-loss", "loss", "training loss (MSE)"),
        ("d3-chi_net", "chi_net", "χ_net = Tr K/B"),
        ("d3-pos", "spectral_position", "χ_pos"),
    ):
        lines, bands = plots.empty_lines(), plots.empty_bands()
        for feat, w, lab in _rf_series(ds):
            if width != "all" and w != int(width):
                continue
            plots.add_series(
                lines,
                bands,
                x,
                plots.seed_traces(ds[var].sel(features=feat, width=w), mode),
                colors[(feat, w)],
                lab,
                log_y=True,
            )
        put_lines(data, key, lines, bands)
        data["spans"][f"{key}-marker"] = None if step is None else step + 1
        plots.set_panel(data, key, label, "step + 1", label, log_x=True, log_y=True)
    data["panels"], data["legend"] = [["d3-loss", "d3-chi_net", "d3-pos"]], ["d3-loss"]
    return data


# =========================================================================== F-d4


def fig_d4_data(
    cubes: Mapping[str, Any],
    *,
    width: int | None = None,
    features: str = "frozen",
    seed: Any = "mean",
    step: int | None = None,
) -> FigureData:
    """Figure data of F-d4 from the ``rf`` cube at one ``width`` (default the smallest) and
    ``features``: panel ``"d4-weights"``, the residual's spectral weights w_k as a heat map
    over eigen-index k (x) × recorded step (y; source ``"d4-weights-cells"``, colour
    mapper ``"d4-mapper"``, log scale), with the median eigen-index of w_k per step
    (``"d4-weights-median"``); panel ``"d4-pos"``: χ_pos from the eigendecomposition
    Σ_k (λ_k/Tr K)·w_k (markers) over the kernel-free χ_pos (line) against step + 1.
    ``seed="mean"`` averages w_k over seeds ("all" shows the mean too)."""
    ds = need_cube(cubes, "rf")
    check_choice("features", features, ds["features"].values.tolist())
    widths = [int(w) for w in ds["width"].values]
    width = widths[0] if width is None else int(width)
    check_choice("width", width, widths)
    mode = plots.seed_mode(seed, ds)
    sub = ds.sel(width=width, features=features)
    wk = sub["residual_weights"]
    wk = (
        wk.mean("seed")
        if mode in ("mean", "all") and "seed" in wk.dims
        else (wk.sel(seed=mode) if "seed" in wk.dims else wk)
    )
    steps = [int(s) for s in ds["step"].values]
    vals = np.asarray(wk.transpose("step", "eigen_index").values, float)
    n_eig = vals.shape[1]
    vals = np.where(vals > 0, vals, np.nan)
    low, high = plots.color_range(vals, log=True)
    low = max(low, high * 1e-8)  # the floor of round-off weights
    med = median_index(np.nan_to_num(np.asarray(wk.transpose("step", "eigen_index").values, float)))
    lam = sub["eigenvalues"].isel(step=-1)
    lam = np.asarray(_stats.seed_mean(lam).values, float)
    rank = int(np.sum(lam > 1e-6 * lam[0]))  # the frozen small model's kernel has rank width + 1 < N
    data = plots.figure_data(
        "F-d4",
        f"<b>F-d4 the spectrum behind the position</b> — {FEATURES[features][0]}, width {width}; {_data_note(ds)}; "
        f"{'w_k averaged over seeds' if mode in ('mean', 'all') else f'seed {mode}'}; white: the median eigen-index of w_k"
        + (
            "; orange dashes: the kernel's numerical rank (λ_k > 10⁻⁶ λ_1 at the last step): beyond it w_k cannot be learned"
            if rank < n_eig
            else ""
        ),
    )
    data["sources"]["d4-weights-cells"] = plots.step_heatmap_cells(vals, steps)
    data["sources"]["d4-weights-median"] = {"x": (med + 1).tolist(), "step_label": [str(s) for s in steps]}
    data["ranges"] = {"d4-mapper": [low, high]}
    data["layout"] = {"name": "F-d4", "steps": [str(s) for s in steps], "n_eig": n_eig}
    x = np.asarray(steps, float) + 1.0
    lines, bands = plots.empty_lines(), plots.empty_bands()
    plots.add_series(
        lines, bands, x, plots.seed_traces(sub["spectral_position"], mode), "#444444", "kernel-free χ_pos", log_y=True
    )
    pos_eig = sub["spectral_position_eig"]
    pts: dict[str, list] = {"x": [], "y": []}
    for y, _ in plots.seed_traces(pos_eig, mode):
        ok = plots.finite_mask(x, y, True, True)
        pts["x"] += x[ok].tolist()
        pts["y"] += y[ok].tolist()
    put_lines(data, "d4-pos", lines, bands)
    data["sources"]["d4-pos-points"] = pts
    data["spans"] = {
        "d4-pos-marker": None if step is None else step + 1,
        "d4-weights-rank": rank + 0.5 if rank < n_eig else None,
    }
    plots.set_panel(
        data,
        "d4-weights",
        "residual spectral weights w_k = (v_k·u)²/‖u‖²",
        "eigen-index k (1 = largest λ)",
        "step",
        log_x=False,
        log_y=False,
    )
    plots.set_panel(
        data, "d4-pos", "χ_pos: eigenpairs (dots) vs kernel-free (line)", "step + 1", "χ_pos", log_x=True, log_y=True
    )
    data["panels"], data["legend"] = [["d4-weights", "d4-pos"]], ["d4-pos"]
    return data


def build_d4(data: FigureData) -> Any:
    """The F-d4 layout: the w_k heat map with its colour bar and median line, and the χ_pos
    panel."""
    from bokeh.layouts import column, row
    from bokeh.models import ColumnDataSource, Span

    lo, hi = data["ranges"]["d4-mapper"]
    fig, _ = plots.step_heatmap(
        "d4-weights",
        data["titles"]["d4-weights"],
        data["sources"]["d4-weights-cells"],
        plots.color_mapper(lo, hi, log=True, name="d4-mapper"),
        n_x=int(data["layout"]["n_eig"]),
        steps=list(data["layout"]["steps"]),
        x_label=data["x_labels"]["d4-weights"],
        y_label=data["y_labels"]["d4-weights"],
        tooltips=[("k", "@x"), ("step", "@step_label"), ("w_k", "@value{%0.3g}")],
        colorbar_title="w_k",
    )
    med = ColumnDataSource(dict(data["sources"]["d4-weights-median"]), name="d4-weights-median")
    fig.line("x", "step_label", source=med, line_color="white", line_width=2)
    fig.scatter("x", "step_label", source=med, color="white", size=6, line_color="black")
    rank = data["spans"]["d4-weights-rank"]
    fig.add_layout(
        Span(
            location=float(rank) if rank is not None else float("nan"),
            dimension="height",
            line_color="#ff7f0e",
            line_dash="dashed",
            line_width=2.5,
            name="d4-weights-rank",
            visible=rank is not None,
        )
    )
    log_x, log_y = data["scales"]["d4-pos"]
    pos = plots.panel(
        "d4-pos",
        data["titles"]["d4-pos"],
        data["x_labels"]["d4-pos"],
        data["y_labels"]["d4-pos"],
        log_x,
        log_y,
        440,
        380,
    )
    plots.lines_and_bands(pos, data, "d4-pos", legend=True)
    pts = ColumnDataSource(dict(data["sources"]["d4-pos-points"]), name="d4-pos-points")
    pos.scatter("x", "y", source=pts, color="#c2410c", size=7, legend_label="χ_pos from eigenpairs")
    plots.step_marker(pos, "d4-pos-marker", data["spans"]["d4-pos-marker"])
    plots.panel_style(pos, legend=True, location="bottom_left")
    head = plots.header(data["header"], fig.width + pos.width)
    return column(head, row(fig, pos), name="F-d4")


# =========================================================================== figures and controls


def controls(cubes: Mapping[str, Any]) -> list[Control]:
    """The Workbench's controls: ``data_set`` (F-d1's language-model data), ``lnp_data``
    (F-d2: a language model or the random-feature model), ``seed`` (mean ± std, every seed,
    one), ``fit_from`` (F-d1's fit range), ``rf_width`` (F-d3: every size or one),
    ``width`` and ``features`` (F-d4), ``step`` (F-d3/F-d4 marker)."""
    lm = [k for k in LM_SETS if k in cubes]
    first = cubes[lm[0]] if lm else cubes.get("rf")
    seeds = [int(s) for s in first["seed"].values] if first is not None and "seed" in first.dims else []
    ctls = [
        Control("data_set", "toggle", lm[0] if lm else "stories", [(k, k) for k in lm] or ["stories"], description="data", button_width="90px"),
        Control("lnp_data", "toggle", lm[0] if lm else "rf", [*lm, *(["rf"] if "rf" in cubes else [])], description="F-d2", button_width="90px"),
        seed_control(seeds),
        Control("fit_from", "dropdown", 0.1, [("fit: steps ≥ 1", 0.0), ("fit: ≥ 1 % of last", 0.01), ("fit: ≥ 10 % of last", 0.1), ("fit: ≥ 30 % of last", 0.3)], description="fit"),
    ]  # fmt: skip
    if "rf" in cubes:
        rf = cubes["rf"]
        widths = [int(w) for w in rf["width"].values]
        ctls += [
            Control("rf_width", "dropdown", "all", [("every size", "all")] + [(f"width {w}", w) for w in widths], description="F-d3"),
            Control("width", "dropdown", widths[0], [(f"width {w}", w) for w in widths], description="F-d4"),
            Control("features", "toggle", "trained", [(FEATURES[f][0], f) for f in rf["features"].values.tolist()], button_width="120px"),
            step_control([int(s) for s in rf["step"].values]),
        ]  # fmt: skip
    return ctls


def _any_lm(cubes: Mapping[str, Any]) -> bool:
    return any(k in cubes for k in LM_SETS)


#: the figures, each drawn when its experiment's cube is there
FIGURES: list[FigureSpec] = [
    FigureSpec(
        "F-d1",
        lambda c, s: fig_d1_data(c, data_set=s["data_set"], seed=seed_or_mean(c, s["data_set"], s["seed"]), fit_from=s["fit_from"]),
        build_d1,
        (("data_set", "seed", "fit_from"),),
        available=_any_lm,
    ),
    FigureSpec(
        "F-d2",
        lambda c, s: fig_d2_data(c, lnp_data=s["lnp_data"], seed=seed_or_mean(c, s["lnp_data"], s["seed"])),
        build_lines,
        (("lnp_data", "seed"),),
        available=lambda c: _any_lm(c) or "rf" in c,
    ),
    FigureSpec(
        "F-d3",
        lambda c, s: fig_d3_data(c, seed=seed_or_mean(c, "rf", s["seed"]), width=s["rf_width"], step=s.get("step")),
        build_lines,
        (("rf_width", "seed"), ("step",)),
        available=_base.has_cubes("rf"),
    ),
    FigureSpec(
        "F-d4",
        lambda c, s: fig_d4_data(c, width=s["width"], features=s["features"], seed=seed_or_mean(c, "rf", s["seed"]), step=s.get("step")),
        build_d4,
        (("width", "features", "seed"), ("step",)),
        available=_base.has_cubes("rf"),
    ),
]  # fmt: skip


# =========================================================================== widgets


Workbench = _paper.workbench()


def rerun_config(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The sweep config of :class:`RerunPanel`'s settings: the quick ``stories`` or
    ``pixels`` experiment (``data_set``) with the chosen ``widths`` (multiples of 4: four
    heads), ``seeds`` (0 … seeds-1), training ``steps`` and learning rate ``lr``."""
    check_choice("data_set", settings["data_set"], LM_SETS)
    cfg = configs("quick")[settings["data_set"]]
    widths = parse_ints(settings["widths"], "widths")
    bad = [w for w in widths if w % 4]
    if bad:
        raise ValueError(f"widths must be multiples of 4 (four attention heads), got {bad}")
    cfg["grid"] = {"width": widths, "seed": list(range(int(settings["seeds"])))}
    cfg["train"]["steps"] = int(settings["steps"])
    cfg["train"]["lr"] = float(settings["lr"])
    return cfg


def _show_d1(cube: Any) -> Any:
    key = "pixels" if config_of(cube).get("data", {}).get("name") == "digits_pixels" else "stories"
    return _base.result_view(cube, (), "F-d1", lambda c: build_d1(fig_d1_data({key: c}, data_set=key)))


class RerunPanel(_base.RerunPanel):
    """Rerun the quick language-model experiment with chosen settings
    (:func:`rerun_config`), with a progress bar, and show F-d1 of the result; one run at a
    time."""

    def __init__(
        self,
        out: str | os.PathLike[str] = "runs/reach-rerun",
        *,
        data_set: str = "stories",
        widths: str = "16, 32",
        seeds: int = 1,
        steps: int = 200,
        lr: float = 3e-3,
    ):
        ctls = [
            Control("data_set", "toggle", data_set, list(LM_SETS), description="data", button_width="80px"),
            int_list_control("widths", widths),
            Control("seeds", "int", seeds, bounds=(1, 20)),
            Control("steps", "int", steps, bounds=(1, 100_000)),
            Control("lr", "float", lr, bounds=(1e-6, 10.0)),
        ]
        layout = [["data_set"], ["widths", "seeds"], ["steps", "lr"]]
        super().__init__(rerun_config, ctls, out, layout=layout, show=_show_d1)
