"""Collective variables of neural networks: empirical time evolution and scaling laws (2024).

The paper tracks the entropy S and the trace Tr K of the empirical NTK of a fixed probe set
while networks train, and reads two mechanisms off them: *information compression* (S
falls; small, shallow networks) and *structure formation* (S ends above its initial value;
deep networks). This module holds the experiment as configs, the run (through
:func:`ntkbench.sweep`, so it resumes and runs on dask), the figure data and builder of each
figure, the fitted summary numbers, and notebook widgets.

Experiments (see :data:`CONFIGS`; all record on a train probe and a test probe of the same
size, S in nats and Tr K of the traced eNTK, summed over outputs):

- ``mlp``: MLPs on ``digits``, activation × width × depth × seed (figures F-b1, F-b2);
- ``scale``: the (width, depth) plane, one seed (figure F-b3); it shares the run folder of
  ``mlp``, so grid points of both are run once;
- ``transformer``: a TinyTransformer on the ``stories`` next-token task (figure F-b4);
- ``cnn``: a CNN on ``digits`` images (figure F-b4);
- ``resnet``: a CIFAR-style ResNet-18 with BatchNorm (:class:`ntkbench.ResNet18`) on
  ``digits`` images, at widths 4 and 8 (figure F-b4). Its BatchNorm layers train on batch
  statistics; the kernel is that of the network in inference mode, with its running
  statistics, which start as those of the training set (:func:`ntkbench.calibrate_batchnorm`).

Quick settings (verified to show the paper's signs with margins over three seeds): digits,
500 train / 200 test images, probe 200, SGD lr 0.1, softmax cross-entropy, 300 steps of
batch 64, widths {8, 128} × depths {1, 6}, ReLU and tanh. What reproduced and where the
quick run departs from the paper (the tanh nets gain entropy at every size; digits, SGD,
a 4-token transformer context, ...) is in ``docs/papers/collective.md``; the ``full``
config uses the paper's grid, 5 seeds and ~500 epochs, sized for a dask cluster.

Built on :mod:`ntkbench.papers._base`: this module holds only the paper (configs, figure
data and builders, :data:`FIGURES`, :func:`controls`, :func:`summarize`).

Example
-------
>>> from ntkbench.papers import collective
>>> sorted(collective.configs("quick")), collective.configs("quick")["mlp"]["grid"]["width"]
(['cnn', 'mlp', 'resnet', 'scale', 'transformer'], [8, 128])

Running them is not a doctest: it trains for minutes.

>>> cubes = collective.run_cubes("runs/collective", "quick")      # doctest: +SKIP
>>> fig = collective.fig_b1(cubes["mlp"])                          # doctest: +SKIP
>>> collective.summarize(cubes)["entropy_change"]["relu 8x1"]      # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ntkbench import cube as cube_mod
from ntkbench import plots
from ntkbench.papers import _base, _stats
from ntkbench.papers._base import FigureSpec, check_choice, config_of, seed_text
from ntkbench.papers._collective_summary import _KERNEL_NOTE, TITLE, families, family_points, format_summary, summarize
from ntkbench.plots import FigureData
from ntkbench.widgets import Control, int_list_control, parse_ints, seed_control, step_control

__all__ = [
    "KEY", "TITLE", "CONFIGS", "MEASURES", "ENTROPY_VARIANTS", "TRACE_VARIANTS", "B3_QUANTITIES",  # the paper
    "configs", "run", "run_cubes", "save_cubes", "open_cubes", "figures", "export_figures", "defaults",  # protocol
    "fig_b1", "fig_b1_data", "build_b1", "fig_b2", "fig_b2_data", "build_b2",  # F-b1, F-b2
    "fig_b3", "fig_b3_data", "build_b3", "fig_b4", "fig_b4_data", "build_b4", "b4_seed_fallbacks", "B4_ARCHITECTURES",  # F-b3, F-b4
    "FIGURES", "controls", "summarize", "format_summary", "families", "family_points",  # collective
    "Workbench", "RerunPanel", "rerun_config",
]  # fmt: skip

KEY = "collective"

#: recorded measures: the train probe's eNTK spectrum, entropy and trace
#: (_base.PROBE_MEASURES), and the scalar measures on the test probe (raw and normalized
#: variants), the losses, accuracies and the kernel's change from initialization
MEASURES: list[str] = [
    *_base.PROBE_MEASURES,
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


def _mlp_pair(
    base: dict[str, Any],
    widths: list[int],
    depths: list[int],
    seeds: list[int],
    scale_widths: list[int],
    scale_depths: list[int],
    scale_seeds: list[int],
) -> dict[str, dict[str, Any]]:
    # same grid key order in both, so shared grid points map to the same run file
    acts = ["relu", "tanh"]
    return {
        "mlp": _base.with_grid(base, {"activation": acts, "depth": depths, "width": widths, "seed": seeds}),
        "scale": _base.with_grid(
            base, {"activation": acts, "depth": scale_depths, "width": scale_widths, "seed": scale_seeds}
        ),
    }


def _transformer(
    width: int, layers: list[int], seeds: list[int], context: int, probe: int, n_train: int, steps: int
) -> dict[str, Any]:
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


def _on_digit_images(
    title: str,
    model: dict[str, Any],
    lr: float,
    grid: dict[str, list[int]],
    n_train: int,
    n_test: int,
    probe: int,
    steps: int,
) -> dict[str, Any]:
    """An F-b4 experiment on the standardized 1×8×8 digit images: Adam, batch 64, softmax
    cross-entropy, 15 log-spaced records."""
    return {
        "title": title,
        "paper": KEY,
        "seed": 0,
        "model": model,
        "data": {
            "name": "digits",
            "n_train": n_train,
            "n_test": n_test,
            "seed": 0,
            "flatten": False,
            "scale": "standardize",
        },
        "train": {"optimizer": "adam", "lr": lr, "steps": steps, "batch_size": 64, "loss": "ce"},
        "record": {"every": "log", "log_points": 15, "probe": probe, "measures": list(MEASURES)},
        "grid": grid,
    }


def _cnn(
    widths: list[int], depths: list[int], seeds: list[int], n_train: int, n_test: int, probe: int, steps: int
) -> dict[str, Any]:
    model = {"name": "cnn", "width": 8, "depth": 1, "pool": "mean"}
    grid = {"depth": depths, "width": widths, "seed": seeds}
    return _on_digit_images("collective: CNN on digits", model, 0.01, grid, n_train, n_test, probe, steps)


def _resnet(widths: list[int], seeds: list[int], n_train: int, n_test: int, probe: int, steps: int) -> dict[str, Any]:
    # Adam 3e-3: at 1e-2 the BatchNorm net's inference-mode loss jumps for its first 20 steps
    grid = {"width": widths, "seed": seeds}
    model = {"name": "resnet18", "width": 4}
    return _on_digit_images("collective: ResNet-18 on digits", model, 3e-3, grid, n_train, n_test, probe, steps)


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
            "resnet": _resnet([4, 8], [0, 1], n_train=500, n_test=100, probe=100, steps=200),
        },
        # the test suite's size: the quick MLP grid (three seeds, the claims' corners); the
        # scale plane is the corners (shared, no extra runs); one seed of each other model
        "test": {
            **_mlp_pair(quick_base, [8, 128], [1, 6], [0, 1, 2], [8, 128], [1, 6], [0, 1, 2]),
            "transformer": _transformer(32, [1, 3], [0], context=4, probe=16, n_train=256, steps=150),
            "cnn": _cnn([8], [1, 3], [0], n_train=500, n_test=64, probe=64, steps=150),
            "resnet": _resnet([4], [0], n_train=256, n_test=32, probe=32, steps=60),
        },
        "full": {
            **_mlp_pair(
                full_base, full_widths, full_depths, [0, 1, 2, 3, 4], full_widths, full_depths, [0, 1, 2, 3, 4]
            ),
            "transformer": _transformer(64, [1, 2, 4], [0, 1, 2, 3, 4], context=8, probe=64, n_train=2048, steps=3000),
            "cnn": _cnn([4, 12, 32, 64], [1, 2, 3], [0, 1, 2, 3, 4], n_train=1000, n_test=797, probe=500, steps=8000),
            "resnet": _resnet([8, 16, 32], [0, 1, 2], n_train=1000, n_test=797, probe=500, steps=8000),
        },
    }


#: name -> experiment -> sweep config (``quick``, ``test`` and ``full``)
CONFIGS: dict[str, dict[str, dict[str, Any]]] = _make_configs()


def _folder(experiment: str) -> str:
    return "runs-mlp" if experiment in ("mlp", "scale") else f"runs-{experiment}"


# ``mlp`` and ``scale`` share the run folder ``out/runs-mlp`` (a grid point of both runs
# once); the transformer's ``layers`` axis is renamed ``depth`` in its cube
_paper = _base.Paper(__name__, folder=_folder, rename={"layers": "depth"}, needs=("mlp",))
#: the wrappers every paper has (:class:`ntkbench.papers._base.Paper`): ``configs(name)``,
#: ``run_cubes(out, config)`` (each cube also saved as ``out/<experiment>.nc``), ``run(out,
#: quick)`` (``ntkbench reproduce collective``), ``open_cubes(path)`` (e.g.
#: ``data/collective_quick.nc``), ``figures(cubes, **settings)`` at :func:`defaults` and
#: ``export_figures(cubes, folder)`` (``folder/collective-F-b*.{format}``)
configs, run_cubes, run, open_cubes = _paper.configs, _paper.run_cubes, _paper.run, _paper.open_cubes
figures, export_figures = _paper.figures, _paper.export_figures
#: every cube in one netCDF file (``mlp`` also in the root group): ntkbench.cube.save_many
save_cubes = cube_mod.save_many


# =========================================================================== shared by the figures


#: activation -> its label (the RerunPanel offers these)
_ACTIVATIONS = {"relu": "ReLU", "tanh": "tanh"}


def _label_act(a: str) -> str:
    return _ACTIVATIONS.get(str(a), str(a))


def _arch_label(act: str, width: int, depth: int) -> str:
    return f"{_label_act(act)} {int(width)}×{int(depth)}"


_PAIR = ("#1f5fa8", "#c2410c")  # config A (blue), config B (orange-red)
_DEPTH_COLORS = ("#1f5fa8", "#c2410c", "#2a9d55", "#7b3fa0", "#8c6d1f")
_COLUMNS = ("loss", "entropy", "trace")
_ROWS = ("activation", "width", "depth")


def _check_variants(entropy: str, trace: str) -> None:
    check_choice("entropy", entropy, ENTROPY_VARIANTS)
    check_choice("trace", trace, TRACE_VARIANTS)


def _b1_pairs(ds: Any, width: int | None, depth: int | None, activation: str) -> dict[str, list[tuple[str, int, int]]]:
    """Row -> the two (activation, width, depth) configurations it compares."""
    widths = [int(v) for v in ds["width"].values]
    depths = [int(v) for v in ds["depth"].values]
    acts = [str(v) for v in ds["activation"].values]
    width = widths[0] if width is None else int(width)
    depth = depths[0] if depth is None else int(depth)
    check_choice("width", width, widths)
    check_choice("depth", depth, depths)
    check_choice("activation", activation, acts)
    pairs = {
        "activation": [(a, width, depth) for a in acts[:2]],
        "width": [(activation, w, depth) for w in (widths[0], widths[-1])],
        "depth": [(activation, width, d) for d in (depths[0], depths[-1])],
    }
    # a cube with one value along an axis: that row shows the one net
    return {row: list(dict.fromkeys(cfgs)) for row, cfgs in pairs.items()}


def _nets(ds: Any, nets: Sequence[tuple[str, int, int]]) -> list[tuple[Any, str, str]]:
    """The (cube selection, colour, label) of each net of an F-b1 / F-b2 row (one or two)."""
    pairs = zip(nets, _PAIR, strict=False)
    return [(ds.sel(activation=a, width=w, depth=d), color, _arch_label(a, w, d)) for (a, w, d), color in pairs]


def _column_vars(col: str, entropy: str, trace: str) -> tuple[str, str, str]:
    if col == "loss":
        return "loss", "test_loss", "loss (cross-entropy)"
    if col == "entropy":
        return ENTROPY_VARIANTS[entropy]
    return TRACE_VARIANTS[trace]


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
    seeds = seed_text(seed, band, fallback=fallback)
    note = "" if ds is None else _base.probe_note(ds, _KERNEL_NOTE)
    if figure == "F-b1":
        return f"<b>F-b1 time evolution</b> — {ev}, {tv}; {note}; {seeds}; train dark, test light"
    if figure == "F-b2":
        return f"<b>F-b2 phase plots</b> — {ev} and {tv} vs loss; {note}; {seeds}; ○ start, □ end"
    if figure == "F-b3":
        return f"<b>F-b3 scale diagram</b> — {ev}, {tv} (log colour); {note}; mean over seeds"
    return f"<b>F-b4 other architectures</b> — {ev}, {tv}; {_KERNEL_NOTE}; {seeds}; train dark, test light"


def _columns(entropy: str, trace: str) -> list[tuple[str, str, str, str, bool]]:
    """The columns of an F-b1 / F-b4 row (:func:`ntkbench.plots.probe_row`): loss,
    entropy and trace against step + 1, loss and trace on a log y axis."""
    return [(col, *_column_vars(col, entropy, trace), col in ("loss", "trace")) for col in _COLUMNS]


# =========================================================================== F-b1


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
    step_marker: int | None = None,
) -> FigureData:
    """Figure data of :func:`fig_b1`: for each row r and column c the panel ``"b1-{r}-{c}"``
    with sources ``"b1-{r}-{c}-lines"`` / ``"-bands"`` (x = step + 1), its texts, and the
    span ``"b1-{r}-{c}-marker"`` at ``step_marker + 1`` (hidden when None)."""
    _check_variants(entropy, trace)
    mode = plots.seed_mode(seed, ds)
    pairs = _b1_pairs(ds, width, depth, activation)
    x = np.asarray(ds["step"].values, float) + 1.0
    data = plots.figure_data("F-b1", _header("F-b1", ds, entropy, trace, seed))
    data["spans"] = {}
    for row, nets in pairs.items():
        title = _row_title("F-b1", row, nets[0], nets[-1])
        keys = plots.probe_row(
            data, f"b1-{row}", title, x, _nets(ds, nets), _columns(entropy, trace), test=test, mode=mode
        )
        for key in keys:
            data["spans"][f"{key}-marker"] = None if step_marker is None else step_marker + 1
        data["panels"].append(keys)
        data["legend"].append(keys[0])
    return data


def build_b1(data: FigureData, panel_size: tuple[int, int] = (330, 250)) -> Any:
    """The F-b1 layout of :func:`fig_b1_data`'s figure data."""
    return plots.line_grid(data, panel_size=panel_size, name="F-b1")


def fig_b1(ds: Any, *, panel_size: tuple[int, int] = (330, 250), **settings: Any) -> Any:
    """F-b1: the 3×3 time-evolution grid; ``settings`` are those of :func:`fig_b1_data`.

    Rows compare two MLPs each: **activation** (ReLU vs tanh at ``width`` × ``depth``),
    **width** (narrowest vs widest at ``depth``, ``activation``), **depth** (shallowest vs
    deepest at ``width``, ``activation``). Columns: loss, entropy (``entropy`` variant
    ``"S"`` or ``"S/lnN"``), trace (``"TrK"`` or ``"TrK/N"``) against step + 1 on a log
    axis. Train probe dark, test probe light (``test=False`` hides it); ``seed="mean"``
    draws mean ± std bands, ``"all"`` every seed, an int one seed; ``step_marker`` a dashed
    line at that step. Defaults: the narrowest width and the smallest depth, ReLU (so each
    row contains the narrow shallow ReLU net).

    Not run as a doctest: ``cubes`` stands for
    ``open_cubes("data/collective_quick.nc")``; the paper's tests draw every figure at
    many settings.

    >>> fig = fig_b1(cubes["mlp"], seed="all", entropy="S/lnN")  # doctest: +SKIP
    """
    return build_b1(fig_b1_data(ds, **settings), panel_size)


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
) -> FigureData:
    """Figure data of :func:`fig_b2`: panels ``"b2-{row}-{col}"`` (col entropy or trace)
    with sources ``"…-lines"`` (x = loss, y = entropy or trace), ``"…-ends"`` (start circle
    / end square), ``"…-marker"`` (the point at ``step``) and an empty ``"…-bands"``."""
    _check_variants(entropy, trace)
    mode = plots.seed_mode(seed, ds)
    pairs = _b1_pairs(ds, width, depth, activation)
    steps = ds["step"].values
    k = None if step is None else int(np.abs(steps - step).argmin())
    data = plots.figure_data("F-b2", _header("F-b2", ds, entropy, trace, seed))
    for row, nets in pairs.items():
        keys = plots.phase_row(
            data,
            f"b2-{row}",
            _row_title("F-b2", row, nets[0], nets[-1]),
            _nets(ds, nets),
            _columns(entropy, trace)[1:],  # entropy and trace against the loss
            x_vars=("loss", "test_loss"),
            x_label="loss (log, inverted: time runs →)",
            steps=steps,
            at=k,
            test=test,
            mode=mode,
        )
        data["panels"].append(keys)
        data["legend"].append(keys[1])
    return data


def build_b2(data: FigureData, panel_size: tuple[int, int] = (380, 260)) -> Any:
    """The F-b2 layout of :func:`fig_b2_data`'s figure data."""
    from bokeh.models import HoverTool

    def draw(fig: Any, key: str) -> None:
        legend = key in data["legend"]
        r = plots.lines_and_bands(fig, data, key, legend)
        plots.trajectory_points(fig, data, key)  # start, end and the chosen step
        fig.x_range.flipped = True
        fig.add_tools(HoverTool(renderers=[r], tooltips=[("", "@label")]))
        plots.panel_style(fig, legend=legend, beside="right")  # phase trajectories fill every corner

    return plots.panel_grid(data, draw, panel_size=panel_size, name="F-b2", si_y=plots.si_trace_axes(data))


def fig_b2(ds: Any, *, panel_size: tuple[int, int] = (380, 260), **settings: Any) -> Any:
    """F-b2: phase plots, entropy against loss and trace against loss, for the rows of
    :func:`fig_b1` (``settings`` as in :func:`fig_b2_data`). The loss axis is logarithmic
    and inverted, so training runs left to right; circles mark step 0, squares the last
    step, a filled dot the chosen ``step``.

    Not run as a doctest: ``cubes`` stands for
    ``open_cubes("data/collective_quick.nc")``; the paper's tests draw every figure at
    many settings.

    >>> fig = fig_b2(cubes["mlp"], step=100)  # doctest: +SKIP
    """
    return build_b2(fig_b2_data(ds, **settings), panel_size)


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
    return _stats.seed_mean(da)


def _b3_range(ds: Any, quantity: str, entropy: str, trace: str) -> tuple[float, float]:
    """Colour range of a quantity over ALL steps (so the step slider shows motion)."""
    steps = [int(s) for s in ds["step"].values] if quantity in ("S", "dS") else [None]
    vals = np.concatenate([np.ravel(_b3_values(ds, quantity, s, entropy, trace).values) for s in steps])
    return plots.color_range(vals, log=B3_QUANTITIES[quantity][1], symmetric=quantity == "dS")


def _b3_title(quantity: str, step: int, entropy: str = "S", trace: str = "TrK") -> str:
    """F-b3 panel title of ``quantity``, naming the entropy / trace variant it shows."""
    per_n = " / ln N" if entropy == "S/lnN" else ""
    return {
        "S0": f"initial entropy S(0){per_n}",
        "TrK0": "initial trace Tr K(0)" + (" / N" if trace == "TrK/N" else ""),
        "final_test_loss": "final test loss",
        "S": f"entropy S(t){per_n}, t = {step}",
        "dS": f"ΔS{per_n} = (S(t) − S(0)){per_n}, t = {step}" if per_n else f"ΔS = S(t) − S(0), t = {step}",
    }[quantity]


def fig_b3_data(
    ds: Any, quantities: str | Sequence[str] = "dS", *, step: int | None = None, entropy: str = "S", trace: str = "TrK"
) -> FigureData:
    """Figure data of :func:`fig_b3`: one row per quantity ``q`` with a heat map
    ``"b3-{q}-{activation}"`` per activation, its source ``"b3-{q}-{activation}-cells"``
    (``width_label``, ``depth_label``, ``width``, ``depth``, ``value``, ``text``,
    ``text_color``) and the colour range of mapper ``"b3-{q}-mapper"``."""
    _check_variants(entropy, trace)
    qs = [quantities] if isinstance(quantities, str) else list(quantities)
    for q in qs:
        if q not in B3_QUANTITIES:
            raise ValueError(f"quantity must be one of {list(B3_QUANTITIES)}, got {q!r}")
    steps = ds["step"].values
    st = int(steps[-1]) if step is None else int(steps[np.abs(steps - step).argmin()])
    acts = ds["activation"].values.tolist()
    widths, depths = [int(w) for w in ds["width"].values], [int(d) for d in ds["depth"].values]
    data = plots.figure_data("F-b3", _header("F-b3", ds, entropy, trace))
    data.update(
        layout=["F-b3", qs],
        ranges={},
        factors={
            "x": [str(w) for w in ds["width"].values.tolist()],
            "y": [str(d) for d in ds["depth"].values.tolist()],
        },
    )
    del data["scales"], data["x_labels"], data["y_labels"]
    for q in qs:
        da = _b3_values(ds, q, st, entropy, trace)
        lo, hi = _b3_range(ds, q, entropy, trace)
        log, diverging = B3_QUANTITIES[q][1], q == "dS"
        data["ranges"][f"b3-{q}-mapper"] = [lo, hi]
        keys = []
        for act in acts:
            cells = plots.heatmap_cells(
                da.sel(activation=act).transpose("depth", "width").values,
                widths,
                depths,
                x_name="width",
                y_name="depth",
                low=lo,
                high=hi,
                log=log,
                diverging=diverging,
                fmt="{:+.2f}" if q == "dS" else "{:.2f}",
            )
            key = f"b3-{q}-{act}"
            data["sources"][f"{key}-cells"] = cells
            data["titles"][key] = f"{_label_act(act)}: {_b3_title(q, st, entropy, trace)}"
            keys.append(key)
        data["panels"].append(keys)
    return data


def build_b3(data: FigureData, cell: int = 62) -> Any:
    """The F-b3 layout of :func:`fig_b3_data`'s figure data: a row of heat maps per
    quantity, the colour bar beside the last."""
    qs = data["layout"][1]  # a row of heat maps per quantity

    def mapper(q: str) -> Any:
        lo, hi = data["ranges"][f"b3-{q}-mapper"]
        return plots.color_mapper(lo, hi, log=B3_QUANTITIES[q][1], diverging=q == "dS", name=f"b3-{q}-mapper")

    return plots.heatmap_rows(
        data,
        [mapper(q) for q in qs],
        name="F-b3",
        tooltips=[[("width", "@width"), ("depth", "@depth"), (q, "@value{%0.4g}")] for q in qs],
        si_colorbar=[B3_QUANTITIES[q][1] for q in qs],
        x_label="width",
        y_label="depth (hidden layers)",
        x_field="width_label",
        y_field="depth_label",
        cell=cell,
    )


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

    Not run as a doctest: ``cubes`` stands for
    ``open_cubes("data/collective_quick.nc")``; the paper's tests draw every figure at
    many settings.

    >>> fig = fig_b3(cubes["scale"], "dS", step=30)  # doctest: +SKIP
    """
    return build_b3(fig_b3_data(ds, quantities, step=step, entropy=entropy, trace=trace), cell)


# =========================================================================== F-b4


def b4_seed_fallbacks(cubes: Mapping[str, Any], seed: Any, missing_seed: str = "error") -> list[str]:
    """Architectures of F-b4 whose cube lacks the single ``seed`` asked for. With
    ``missing_seed="mean"`` they show the mean over their own seeds instead (the Workbench
    offers the MLP sweep's seeds, which may be more); with ``"error"`` a missing seed raises
    ``ValueError`` naming ``seed`` (:func:`ntkbench.papers._base.seed_fallbacks`)."""
    return _base.seed_fallbacks(cubes, B4_ARCHITECTURES, seed, missing_seed)


#: the experiments F-b4 draws, in its row order
B4_ARCHITECTURES = ("transformer", "cnn", "resnet")


def _arch_title(arch: str, ds: Any) -> str:
    cfg = config_of(ds)
    m, d = cfg.get("model", {}), cfg.get("data", {})
    if arch == "transformer":
        return f"TinyTransformer w{m.get('width')}, stories (ctx {d.get('context')})"
    if arch == "resnet":
        return "ResNet-18 (BatchNorm), digits"
    w = int(ds["width"].values[0]) if "width" in ds.dims else m.get("width")
    return f"CNN {w} channels, digits"


def fig_b4_data(
    cubes: Mapping[str, Any],
    *,
    seed: Any = "mean",
    entropy: str = "S",
    trace: str = "TrK",
    test: bool = True,
    missing_seed: str = "error",
) -> FigureData:
    """Figure data of :func:`fig_b4`: panels ``"b4-{arch}-{col}"`` with sources
    ``"…-lines"`` / ``"…-bands"`` for arch in :data:`B4_ARCHITECTURES` (``transformer``,
    ``cnn``: one line per depth, widths other than the first dropped; ``resnet``: one line
    per width).

    A single ``seed`` that an architecture's cube lacks is an error, or, with
    ``missing_seed="mean"``, shows the mean over that cube's seeds (:func:`b4_seed_fallbacks`)."""
    _check_variants(entropy, trace)
    fallback = b4_seed_fallbacks(cubes, seed, missing_seed)
    data = plots.figure_data("F-b4", _header("F-b4", None, entropy, trace, seed, fallback))
    for arch in B4_ARCHITECTURES:
        if arch not in cubes:
            continue
        ds = cubes[arch]
        # one line per depth (the ResNet: per width)
        dim, kind = {"transformer": ("depth", "layers"), "resnet": ("width", "width")}.get(arch, ("depth", "depth"))
        if "width" in ds.dims and dim != "width":
            ds = ds.isel(width=0)
        mode = "mean" if arch in fallback else plots.seed_mode(seed, ds)
        x = np.asarray(ds["step"].values, float) + 1.0
        values = ds[dim].values.tolist()
        series = [
            (ds.sel({dim: v}), color, f"{kind} {v}")
            for v, color in zip(values, itertools.cycle(_DEPTH_COLORS), strict=False)
        ]
        title = _arch_title(arch, cubes[arch])
        keys = plots.probe_row(data, f"b4-{arch}", title, x, series, _columns(entropy, trace), test=test, mode=mode)
        data["panels"].append(keys)
        data["legend"].append(keys[0])
    if not data["panels"]:
        raise ValueError(f"cubes holds none of the F-b4 cubes {list(B4_ARCHITECTURES)}")
    return data


def build_b4(data: FigureData, panel_size: tuple[int, int] = (330, 250)) -> Any:
    """The F-b4 layout of :func:`fig_b4_data`'s figure data."""
    return plots.line_grid(data, panel_size=panel_size, name="F-b4")


def fig_b4(cubes: Mapping[str, Any], *, panel_size: tuple[int, int] = (330, 250), **settings: Any) -> Any:
    """F-b4: other architectures, a TinyTransformer on ``stories`` (next token), a CNN and a
    ResNet-18 on ``digits``: loss, entropy and trace against step + 1, one colour per depth
    (the ResNet: per width), train dark, test light. ``cubes`` holds any of
    :data:`B4_ARCHITECTURES`; ``settings`` as in
    :func:`fig_b4_data` (its header says which architectures fell back to the mean).

    Not run as a doctest: ``cubes`` stands for
    ``open_cubes("data/collective_quick.nc")``; the paper's tests draw every figure at
    many settings.

    >>> fig = fig_b4(cubes)  # doctest: +SKIP
    """
    return build_b4(fig_b4_data(cubes, **settings), panel_size)


# =========================================================================== figures and controls


def controls(cubes: Mapping[str, Any]) -> list[Control]:
    """The Workbench's controls for these cubes (their defaults are the figures' defaults):
    ``activation``, ``width``, ``depth`` (the fixed values of the F-b1/F-b2 rows), ``seed``
    (mean ± std, every seed, one seed), ``test`` (draw the test probe), ``entropy`` (S or
    S/lnN), ``trace`` (Tr K or Tr K/N), ``step`` (the marker in F-b1, the dot in F-b2),
    ``b3_step`` (the step of F-b3), ``quantity`` (F-b3's colour)."""
    mlp = cubes["mlp"]
    scale = cubes.get("scale", mlp)
    seeds = [int(s) for s in mlp["seed"].values] if "seed" in mlp.dims else []
    scale_steps = [int(s) for s in scale["step"].values]
    return [
        _base.dim_control(mlp, "activation", "toggle", _label_act, button_width="70px"),
        _base.dim_control(mlp, "width"),
        _base.dim_control(mlp, "depth"),
        seed_control(seeds),
        Control("test", "checkbox", True, description="test probe (light)"),
        Control("entropy", "toggle", "S", [("S [nat]", "S"), ("S / ln N", "S/lnN")], button_width="80px"),
        Control("trace", "toggle", "TrK", [("Tr K", "TrK"), ("Tr K / N", "TrK/N")], button_width="80px"),
        step_control([int(s) for s in mlp["step"].values]),
        step_control(scale_steps, scale_steps[-1], name="b3_step"),
        Control("quantity", "dropdown", "dS", [(v[0], k) for k, v in B3_QUANTITIES.items()], description="colour"),
    ]


def _rows_kw(s: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of the F-b1 / F-b2 rows."""
    return {k: s[k] for k in ("width", "depth", "activation", "seed", "entropy", "trace", "test")}


_B1_CONTROLS = (("activation", "width", "depth"), ("seed", "test"), ("entropy", "trace"), ("step",))

#: the figures: F-b1 / F-b2 from the ``mlp`` cube, F-b3 from ``scale`` (else ``mlp``),
#: F-b4 from ``transformer`` and ``cnn`` (a missing seed there shows the mean)
FIGURES: list[FigureSpec] = [
    FigureSpec(
        "F-b1", lambda c, s: fig_b1_data(c["mlp"], **_rows_kw(s), step_marker=s["step"]), build_b1, _B1_CONTROLS
    ),
    FigureSpec("F-b2", lambda c, s: fig_b2_data(c["mlp"], **_rows_kw(s), step=s["step"]), build_b2, _B1_CONTROLS),
    FigureSpec(
        "F-b3",
        lambda c, s: fig_b3_data(
            c.get("scale", c["mlp"]), s["quantity"], step=s["b3_step"], entropy=s["entropy"], trace=s["trace"]
        ),
        build_b3,
        (("quantity", "entropy", "trace"), ("b3_step",)),
    ),
    FigureSpec(
        "F-b4",
        lambda c, s: fig_b4_data(
            c, seed=s["seed"], entropy=s["entropy"], trace=s["trace"], test=s["test"], missing_seed="mean"
        ),
        build_b4,
        (("seed", "test"), ("entropy", "trace")),
        available=lambda c: any(a in c for a in B4_ARCHITECTURES),
    ),
]


def defaults(cubes: Mapping[str, Any]) -> dict[str, Any]:
    """The settings ``reproduce`` draws the figures at: the controls' defaults, no step
    marker, and F-b3 with four quantities (S(0), Tr K(0), final test loss, ΔS at the end)."""
    return {**_paper.defaults(cubes), "b3_step": None, "quantity": ("S0", "TrK0", "final_test_loss", "dS")}


# =========================================================================== widgets


Workbench = _paper.workbench(
    "The cubes must hold ``mlp``. Figures redraw in place; only F-b3's ``quantity`` (another "
    "colour mapper) rebuilds F-b3. ``wb.export(figure, format)`` writes "
    "``figures_dir/collective-<figure>.<format>`` as shown."
)


def rerun_config(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The sweep config of :class:`RerunPanel`'s settings: the quick MLP experiment with
    the chosen ``widths``, ``depths``, ``seeds`` (comma-separated integers),
    ``activations``, ``n_train`` (the data budget; the probe is capped by it), ``lr``,
    ``steps`` and ``probe``."""
    base = configs("quick")["mlp"]
    n_train, probe = int(settings["n_train"]), int(settings["probe"])
    base["train"]["steps"] = int(settings["steps"])
    base["train"]["lr"] = float(settings["lr"])
    base["data"]["n_train"] = n_train
    base["record"]["probe"] = min(probe, n_train)
    base["data"]["n_test"] = max(probe, base["data"]["n_test"])
    if not list(settings["activations"]):
        raise ValueError("activations must name at least one activation (ReLU, tanh)")
    base["grid"] = {
        "activation": list(settings["activations"]),
        "depth": parse_ints(settings["depths"], "depths"),
        "width": parse_ints(settings["widths"], "widths"),
        "seed": parse_ints(settings["seeds"], "seeds", minimum=0),
    }
    return base


def _show_b1(cube: Any) -> Any:
    draw = lambda c: fig_b1(c, activation=str(c["activation"].values[0]))  # noqa: E731
    return _base.result_view(cube, ("activation", "depth", "width"), "F-b1", draw)


class RerunPanel(_base.RerunPanel):
    """Rerun the quick MLP experiment with chosen settings (:func:`rerun_config`), with a
    progress bar; show F-b1 of the result when done. One run at a time: a click while a run
    is in progress is refused (see :class:`ntkbench.papers._base.RerunPanel`).

    Not run as a doctest: a notebook panel that trains; the paper's tests run it on a
    small config.

    >>> panel = RerunPanel(out="runs/collective-rerun")  # doctest: +SKIP
    >>> panel.run()                                       # doctest: +SKIP
    """

    def __init__(
        self,
        out: str | os.PathLike[str] = "runs/collective-rerun",
        *,
        widths: str = "8, 128",
        depths: str = "1, 6",
        seeds: str = "0",
        activations: Sequence[str] = ("relu",),
        steps: int = 300,
        lr: float = 0.1,
        probe: int = 200,
        n_train: int = 500,
    ):
        acts = [(label, a) for a, label in _ACTIVATIONS.items()]
        ctls = [
            int_list_control("widths", widths),
            int_list_control("depths", depths),
            int_list_control("seeds", seeds),
            Control("activations", "multiple", tuple(activations), acts, description="activation", rows=2),
            Control("n_train", "int", n_train, description="train N", bounds=(2, 1500)),
            Control("steps", "int", steps, bounds=(1, 100_000)),
            Control("lr", "float", lr, description="SGD lr", bounds=(1e-5, 10.0)),
            Control("probe", "int", probe, description="probe N", bounds=(2, 500)),
        ]
        layout = [["widths", "depths", "seeds"], ["activations", "n_train", "steps"], ["lr", "probe"]]
        super().__init__(rerun_config, ctls, out, layout=layout, show=_show_b1)
