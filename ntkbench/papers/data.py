"""Towards a Phenomenological Understanding of Neural Networks: Data (2023).

The paper reads two collective variables off the eNTK of the *training set at
initialization*, its entropy S (S/ln N) and its trace Tr K, relates them to how well the
trained network generalizes, and selects training data by random network distillation
(RND), which picks sets of larger entropy and trace than random selection and, at small
budgets, better test accuracy.

Experiments (see :data:`CONFIGS`; every run selects its training set from a pool with
``ntkbench.select`` inside the sweep, trains an MLP and records the eNTK of the whole
selected set -- its spectrum, S, S/ln N, Tr K, Tr K/N -- and the losses and accuracies):

- ``selection``: mnist1d, method {RND, random, approximate max-entropy} × budget × repeat
  (figures F-a2, F-a3, F-a4); ``selection_digits``: the same on scikit-learn's digits;
- ``subsets``: digits, 40 random subsets per budget (F-a1: accuracy against S/ln N and
  Tr K at initialization, rank correlations within each budget with bootstrap intervals);
- ``small``: a small net (MLP 8×1, SGD, cross-entropy) on 30 random points (F-a5: S/ln N
  during training).

The quick run, what reproduced and what did not, and how to run the ``full`` config on real
MNIST files are in ``docs/papers/data.md``. Built on :mod:`ntkbench.papers._base`.

Example
-------
Not run as a doctest: it trains for minutes (the paper's tests run its small ``test``
config).

>>> from ntkbench.papers import data
>>> cubes = data.run("runs/data", quick=True)                   # doctest: +SKIP
>>> data.summarize(cubes)["selection"]["mnist1d"]["10"]["rnd"]   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ntkbench import plots
from ntkbench.papers import _base, _stats
from ntkbench.papers._base import FigureSpec, at_step, check_choice, put_lines, seed_text
from ntkbench.papers._data_a1 import (
    ACCURACY_VARIANTS,
    CORRELATION_VARIANTS,
    ENTROPY_VARIANTS,
    KERNEL_TEXT,
    TRACE_VARIANTS,
    build_a1,
    correlations,
    data_name,
    data_note,
    fig_a1_data,
    trim_spectra,
)
from ntkbench.plots import FigureData
from ntkbench.widgets import Control, int_list_control, parse_ints, seed_control, step_control

__all__ = [
    "KEY", "TITLE", "CONFIGS", "MEASURES", "METHODS", "AUTHORS_CNN", "AUTHORS_RND",  # the paper: data selection
    "configs", "run", "run_cubes", "open_cubes", "figures", "defaults",  # its protocol (configs, runs, cubes)
    "fig_a1_data", "build_a1", "fig_a2_data", "fig_a3_data", "fig_a4_data", "fig_a5_data", "build_lines",  # F-a*
    "FIGURES", "controls", "summarize", "format_summary", "Workbench", "RerunPanel", "rerun_config",  # data
    "CORRELATION_VARIANTS", "correlations", "data_name", "trim_spectra",  # F-a1's claim; the shipped power cube
]  # fmt: skip

KEY = "data"
TITLE = "Towards a Phenomenological Understanding of Neural Networks: Data"

#: recorded on the whole selected training set (the probe is the training set)
MEASURES: list[str] = [
    *_base.PROBE_MEASURES,
    "loss",
    "test_loss",
    "accuracy",
    "test_accuracy",
]

#: selection method -> (label, colour)
METHODS: dict[str, tuple[str, str]] = {
    "rnd": ("RND", "#c2410c"),
    "random": ("random", "#1f5fa8"),
    "max_entropy": ("max-entropy (m = 20)", "#2a9d55"),
}
#: F-a2..F-a4 data sets -> experiment
DATA_SETS = {"mnist1d": "selection", "digits": "selection_digits"}
#: F-a3 / F-a4's kernel -> (experiment suffix, header text): the classifier's own at
#: initialization, or the RND target network's, cosine-normalised, as the authors measured sets
KERNELS: dict[str, tuple[str, str]] = {
    "classifier": ("", KERNEL_TEXT),
    "rnd_target": ("_target", "the RND target network's traced eNTK of the whole selected set, cosine-normalised"),
}


# =========================================================================== configs


def _cfg(
    data: str,
    *,
    pool: int,
    n_test: int,
    grid: dict[str, list],
    model: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    log_points: int = 8,
    title: str,
) -> dict[str, Any]:
    return {
        "title": f"data: {title}",
        "paper": KEY,
        "seed": 0,
        "model": model or {"name": "mlp", "width": 128, "depth": 2, "activation": "relu"},
        "data": {"name": data, "n_train": pool, "n_test": n_test, "seed": 0},
        "select": {"method": "random", "budget": 10},
        "train": train or {"optimizer": "adam", "lr": 1e-3, "steps": 300, "batch_size": "full", "loss": "mse"},
        # the probe is the whole selected set: at least the largest budget
        "record": {
            "every": "log",
            "log_points": log_points,
            "probe": max(200, *grid["budget"]),
            "measures": list(MEASURES),
        },
        "grid": grid,
    }


def _target(cfg: dict[str, Any]) -> dict[str, Any]:
    """The same selections measured on the RND target network's cosine-normalised kernel, as
    the authors compared sets (F-a3, F-a4): a fixed network, so nothing is trained."""
    record = {**cfg["record"], "measures": list(_base.PROBE_MEASURES), "kernel_model": "rnd_target"}
    train = {**cfg["train"], "steps": 0}
    return {
        **cfg,
        "title": cfg["title"] + ", RND target kernel",
        "train": train,
        "record": {**record, "normalize": "cosine"},
    }


def _power(data: str = "mnist1d", budgets: Sequence[int] = (200, 500, 1000), n: int = 2000) -> dict[str, Any]:
    """F-a1 at the authors' power: ``n`` random subsets per budget from a pool of 8 000, test
    accuracy on 2 000 held-out samples after a fixed 300 full-batch Adam steps (= epochs);
    the kernel (and its whole spectrum) at initialization and at the end."""
    cfg = _cfg(
        data,
        pool=8000,
        n_test=2000,
        title=f"random subsets at the authors' power on {data}",
        grid={"budget": list(budgets), "seed": list(range(n))},
    )
    cfg["record"]["every"] = [0, cfg["train"]["steps"]]
    return cfg


def _cosine(cfg: dict[str, Any]) -> dict[str, Any]:
    """The same subsets and initial networks, their spectral measures of the
    cosine-normalised kernel (traces stay the kernel's own): step 0, nothing trained."""
    record = {**cfg["record"], "every": [0], "measures": list(_base.PROBE_MEASURES), "normalize": "cosine"}
    return {
        **cfg,
        "title": cfg["title"] + ", cosine-normalised kernel",
        "train": {**cfg["train"], "steps": 0},
        "record": record,
    }


_SMALL_MODEL = {"name": "mlp", "width": 8, "depth": 1, "activation": "relu"}
_SMALL_TRAIN = {"optimizer": "sgd", "lr": 0.1, "steps": 500, "batch_size": "full", "loss": "ce"}


def _make_configs() -> dict[str, dict[str, dict[str, Any]]]:
    methods = list(METHODS)
    sel = lambda data, budgets, seeds, pool=1000, n_test=500: _cfg(  # noqa: E731
        data,
        pool=pool,
        n_test=n_test,
        title=f"RND vs random vs max-entropy on {data}",
        grid={"selection": methods, "budget": budgets, "seed": seeds},
    )
    subsets = lambda budgets, seeds, pool=1000, n_test=500: _cfg(  # noqa: E731
        "digits", pool=pool, n_test=n_test, title="random subsets on digits", grid={"budget": budgets, "seed": seeds}
    )
    small = lambda seeds, budget=30: _cfg(  # noqa: E731
        "mnist1d",
        pool=1000,
        n_test=500,
        title="a small net on a small set",
        model=_SMALL_MODEL,
        train=_SMALL_TRAIN,
        log_points=15,
        grid={"budget": [budget], "seed": seeds},
    )
    quick_budgets = [10, 20, 30, 50, 80]
    return {
        "quick": {
            "selection": sel("mnist1d", quick_budgets, list(range(5))),
            "selection_digits": sel("digits", quick_budgets, list(range(5))),
            "selection_target": _target(sel("mnist1d", quick_budgets, list(range(5)))),
            "selection_digits_target": _target(sel("digits", quick_budgets, list(range(5)))),
            "subsets": subsets([20, 40, 80, 160], list(range(40))),
            "small": small(list(range(6))),
        },
        # the test suite's size: the smallest budgets, fewer repeats
        "test": {
            "selection": sel("mnist1d", [10, 30], [0, 1, 2], pool=400, n_test=300),
            "selection_target": _target(sel("mnist1d", [10, 30], [0, 1, 2], pool=400, n_test=300)),
            "subsets": subsets([20, 60], list(range(6)), pool=400, n_test=300),
            "small": small([0, 1]),
        },
        # as close to the paper as offline data allow: budgets 10..90, 10 repeats; point
        # `data` at real MNIST with configs("full", data={"name": "mnist_idx", "path": ...})
        "full": {
            "selection": sel("mnist1d", [10, 20, 30, 40, 50, 60, 70, 80, 90], list(range(10)), pool=4000, n_test=1000),
            "selection_digits": sel("digits", [10, 20, 30, 50, 80], list(range(10)), pool=1000, n_test=797),
            "selection_target": _target(
                sel("mnist1d", [10, 20, 30, 40, 50, 60, 70, 80, 90], list(range(10)), 4000, 1000)
            ),
            "selection_digits_target": _target(sel("digits", [10, 20, 30, 50, 80], list(range(10)), n_test=797)),
            "subsets": subsets([20, 40, 80, 160, 320], list(range(100)), pool=1000, n_test=797),
            "small": small(list(range(10))),
        },
        # F-a1 at the authors' power (issue: is the initial eNTK predictive at all?): 2 000
        # random subsets at each of N = 200, 500, 1 000; about 40 minutes on 2 cores
        "power": {"subsets": _power(), "subsets_cosine": _cosine(_power())},
    }


#: name -> experiment -> sweep config (``quick``, ``test`` and ``full``)
CONFIGS: dict[str, dict[str, dict[str, Any]]] = _make_configs()


#: the authors' classifier: 3×3 convs of 32 and 64 channels, each with 2×2 average pooling,
#: flattened, Dense 256, Dense 10 (their RND target and predictor: the same trunk, 256 outputs)
AUTHORS_CNN: dict[str, Any] = {
    "name": "cnn",
    "channels": [32, 64],
    "hidden": 256,
    "pool": "flatten",
    "downsample": True,
}
AUTHORS_RND: dict[str, Any] = {"architecture": "cnn", "channels": [32, 64], "out_size": 256}


def configs(
    name: str = "quick", *, data: Mapping[str, Any] | None = None, models: str = "mlp"
) -> dict[str, dict[str, Any]]:
    """A deep copy of the sweep configs of ``name`` (``"quick"``, ``"test"``, ``"full"``,
    ``"power"``).

    ``data`` replaces the data set of ``selection`` (and ``selection_target``, its sets on the
    RND target's kernel), ``subsets`` and ``small`` (mnist1d, digits, mnist1d by default), e.g. ``{"name": "mnist_idx", "path": "~/data/mnist"}`` for real MNIST IDX
    files (the MLPs then see 784 inputs); ``n_train`` (the pool) and ``n_test`` are kept
    unless given.

    ``models="authors"`` trains :data:`AUTHORS_CNN` on images (``flatten = false``) and
    selects with RND networks of :data:`AUTHORS_RND`, as the authors did (the target kernel
    of the ``*_target`` experiments then is the CNN target's). The experiments on mnist1d
    (1-D signals) are left out, unless ``data`` names image data (``mnist_idx``). On digits
    the ``full`` selection experiment costs about 16 times the MLPs' (measured: 180 s against
    11 s for 6 runs), so the ``full`` config keeps the MLPs.

    >>> sorted(configs("quick"))
    ['selection', 'selection_digits', 'selection_digits_target', 'selection_target', 'small', 'subsets']
    >>> configs("quick")["selection"]["grid"]["selection"]
    ['rnd', 'random', 'max_entropy']
    """
    cfgs = _paper.configs(name)
    if data is not None:
        for exp in ("selection", "selection_target", "subsets", "subsets_cosine", "small"):
            if exp in cfgs:
                keep = {k: cfgs[exp]["data"][k] for k in ("n_train", "n_test", "seed")}
                cfgs[exp]["data"] = {**keep, **copy.deepcopy(dict(data))}
                cfgs[exp]["title"] = cfgs[exp]["title"].replace("mnist1d", str(data.get("name")))
    check_choice("models", models, ("mlp", "authors"))
    if models == "authors":
        for exp in list(cfgs):
            cfg = cfgs[exp]
            if cfg["data"]["name"] == "mnist1d":  # 1-D signals: no images for a 2-D CNN
                del cfgs[exp]
                continue
            cfg["data"]["flatten"] = False
            cfg["model"] = copy.deepcopy(AUTHORS_CNN)
            cfg["select"]["options"] = {"rnd": copy.deepcopy(AUTHORS_RND)}
            cfg["title"] += ", the authors' CNNs"
    return cfgs


# =========================================================================== run


_paper = _base.Paper(__name__)
#: the wrappers every paper has (:class:`ntkbench.papers._base.Paper`): ``run_cubes(out,
#: config)`` (``out/runs-<experiment>``, resumable), ``run(out, quick)`` (``ntkbench
#: reproduce data``), ``open_cubes(path)``, ``figures(cubes, **settings)`` and
#: ``defaults(cubes)`` (the controls' defaults, no step marker)
run_cubes, run = _paper.run_cubes, _paper.run
open_cubes, figures, defaults = _paper.open_cubes, _paper.figures, _paper.defaults


# =========================================================================== shared by the figures


def _selection(cubes: Mapping[str, Any], data_set: str, kernel: str = "classifier") -> Any:
    check_choice("data_set", data_set, DATA_SETS)
    check_choice("kernel", kernel, KERNELS)
    exp = DATA_SETS[data_set] + KERNELS[kernel][0]
    if exp not in cubes:
        raise ValueError(f"data_set {data_set!r} needs the {exp!r} cube; cubes are {sorted(cubes)}")
    return cubes[exp]


def _vs_budget(data: FigureData, key: str, ds: Any, var: str, step: int | None, seed: Any, log_y: bool) -> None:
    """Lines over budget, one per method, mean ± standard error over repeats."""
    lines, bands = plots.empty_lines(), plots.empty_bands()
    x = np.asarray(ds["budget"].values, float)
    for method in ds["selection"].values.tolist():
        label, color = METHODS.get(method, (method, "#555555"))
        da = at_step(ds[var].sel(selection=method), step).transpose(..., "budget")
        _base.add_seed_series(lines, bands, x, da, seed, color, label, log_x=False, log_y=log_y)
    put_lines(data, key, lines, bands)


_SE_REPEATS = "mean ± standard error over repeats"


# =========================================================================== F-a1


# =========================================================================== F-a2, F-a3, F-a5 (lines)


def fig_a2_data(
    cubes: Mapping[str, Any],
    *,
    data_set: str = "mnist1d",
    accuracy: str = "test_accuracy",
    seed: Any = "mean",
    step: int | None = None,
) -> FigureData:
    """Figure data of F-a2: ``accuracy`` (final, or at ``step``) against the data budget,
    one line per selection method, mean ± standard error over repeats (panel ``"a2-main"``)."""
    check_choice("accuracy", accuracy, ACCURACY_VARIANTS)
    ds = _selection(cubes, data_set)
    data = plots.figure_data(
        "F-a2",
        f"<b>F-a2 accuracy vs data budget</b> — {data_note(ds)}; {'final step' if step is None else f'step {step}'}; {seed_text(seed, _SE_REPEATS, 'repeat')}",
    )
    _vs_budget(data, "a2-main", ds, accuracy, step, seed, log_y=False)
    plots.set_panel(
        data,
        "a2-main",
        f"{ACCURACY_VARIANTS[accuracy]} by selection method",
        "data budget N",
        ACCURACY_VARIANTS[accuracy],
        log_x=False,
        log_y=False,
    )
    data["panels"], data["legend"] = [["a2-main"]], ["a2-main"]
    return data


def fig_a3_data(
    cubes: Mapping[str, Any],
    *,
    data_set: str = "mnist1d",
    entropy: str = "S/lnN",
    trace: str = "TrK",
    seed: Any = "mean",
    kernel: str = "classifier",
) -> FigureData:
    """Figure data of F-a3: the entropy and the trace of the eNTK of the selected sets at
    initialization against the budget, per method (panels ``"a3-entropy"``, ``"a3-trace"``),
    of the ``kernel`` of :data:`KERNELS`."""
    check_choice("entropy", entropy, ENTROPY_VARIANTS)
    check_choice("trace", trace, TRACE_VARIANTS)
    ds = _selection(cubes, data_set, kernel)
    data = plots.figure_data(
        "F-a3",
        f"<b>F-a3 collective variables of the selected sets</b> — at initialization; {KERNELS[kernel][1]}; {data_note(ds)}; {seed_text(seed, _SE_REPEATS, 'repeat')}",
    )
    for col, (var, label), log_y in (
        ("entropy", ENTROPY_VARIANTS[entropy], False),
        ("trace", TRACE_VARIANTS[trace], True),
    ):
        key = f"a3-{col}"
        _vs_budget(data, key, ds, var, 0, seed, log_y=log_y)
        plots.set_panel(data, key, f"{label} of the selected set", "data budget N", label, log_x=False, log_y=log_y)
    data["panels"], data["legend"] = [["a3-entropy", "a3-trace"]], ["a3-entropy"]
    data["legend_location"] = "top_right"  # both quantities fall or rise away from it
    return data


def fig_a5_data(ds: Any, *, entropy: str = "S/lnN", seed: Any = "mean", step_marker: int | None = None) -> FigureData:
    """Figure data of F-a5 from the ``small`` cube: the entropy of the training set's eNTK
    and the training loss against step + 1 (panels ``"a5-entropy"``, ``"a5-loss"``)."""
    check_choice("entropy", entropy, ENTROPY_VARIANTS)
    mode = plots.seed_mode(seed, ds)
    sub = ds.isel(budget=0) if "budget" in ds.dims else ds
    n = int(sub["budget"].values) if "budget" in sub.coords else None
    x = np.asarray(ds["step"].values, float) + 1.0
    data = plots.figure_data(
        "F-a5",
        f"<b>F-a5 entropy during training</b> — {data_note(ds)}, N = {n}; {KERNEL_TEXT}; {seed_text(seed, 'mean ± std over seeds', 'repeat')}",
    )
    data["spans"] = {}
    for col, (var, label), log_y in (
        ("entropy", ENTROPY_VARIANTS[entropy], False),
        ("loss", ("loss", "training loss (cross-entropy)"), True),
    ):
        key = f"a5-{col}"
        lines, bands = plots.empty_lines(), plots.empty_bands()
        plots.add_series(lines, bands, x, plots.seed_traces(sub[var], mode), "#7b3fa0", label, log_y=log_y)
        put_lines(data, key, lines, bands)
        data["spans"][f"{key}-marker"] = None if step_marker is None else step_marker + 1
        plots.set_panel(
            data,
            key,
            f"{label} of the training set" if col == "entropy" else label,
            "step + 1",
            label,
            log_x=True,
            log_y=log_y,
        )
    data["panels"], data["legend"] = [["a5-entropy", "a5-loss"]], []
    return data


build_lines = _base.line_builder(
    (470, 360),
    """F-a2 / F-a3 / F-a4 / F-a5 layouts: lines with bands in each panel (markers where the
    figure data has spans), legends in ``data["legend"]``.""",
    "bottom_right",
)


# =========================================================================== F-a4


def fig_a4_data(
    cubes: Mapping[str, Any],
    *,
    data_set: str = "mnist1d",
    budget: int | None = None,
    step: int = 0,
    seed: Any = "mean",
    normalize: bool = True,
    kernel: str = "classifier",
) -> FigureData:
    """Figure data of F-a4: the eNTK spectrum (the ``kernel`` of :data:`KERNELS`) of the
    selected sets at ``step`` (default: initialization) against the rank, per method, at one
    ``budget`` (default the largest); ``normalize`` divides by Tr K, so sets compare in
    shape (panel ``"a4-main"``)."""
    ds = _selection(cubes, data_set, kernel)
    budgets = [int(b) for b in ds["budget"].values]
    budget = budgets[-1] if budget is None else int(budget)
    if budget not in budgets:
        raise ValueError(f"budget must be one of {budgets}, got {budget!r}")
    sub = at_step(ds.sel(budget=budget), step)
    ev = sub["eigenvalues"].isel(eigen_index=slice(0, budget))
    if normalize:
        ev = ev / ev.sum("eigen_index")
    x = np.arange(1, budget + 1, dtype=float)
    lines, bands = plots.empty_lines(), plots.empty_bands()
    mode = plots.seed_mode(seed, ds)
    for method in ds["selection"].values.tolist():
        label, color = METHODS.get(method, (method, "#555555"))
        plots.add_series(
            lines,
            bands,
            x,
            plots.seed_traces(ev.sel(selection=method).transpose(..., "eigen_index"), mode),
            color,
            label,
            log_y=True,
        )
    st = int(sub["step"].values) if "step" in sub.coords and sub["step"].ndim == 0 else step
    ylab = "λ_i / Tr K" if normalize else "eigenvalue λ_i"
    data = plots.figure_data(
        "F-a4",
        f"<b>F-a4 spectra</b> — N = {budget}, step {st}; {KERNELS[kernel][1]}; {data_note(ds)}; {seed_text(seed, 'mean ± std over repeats', 'repeat')}",
    )
    data["sources"] = {"a4-main-lines": lines, "a4-main-bands": bands}
    plots.set_panel(
        data, "a4-main", f"eNTK spectrum of the selected sets (N = {budget})", "rank i", ylab, log_x=True, log_y=True
    )
    data["panels"], data["legend"] = [["a4-main"]], ["a4-main"]
    data["legend_location"] = "top_right"  # a spectrum falls from the top left
    return data


# =========================================================================== figures and controls


def controls(cubes: Mapping[str, Any]) -> list[Control]:
    """The Workbench's controls: ``data_set`` (mnist1d or digits for F-a2..F-a4),
    ``accuracy``, ``entropy`` / ``trace`` variants, ``seed`` (mean ± SE, every repeat, one),
    ``budget`` (F-a4's set size), ``a1_budget`` (F-a1: every budget or one), ``a1_kernel``
    (F-a1's entropy of the raw or, with ``subsets_cosine``, the cosine-normalised kernel),
    ``normalize`` (F-a4), ``kernel`` (F-a3 / F-a4: the classifier's or the RND target's, with
    the ``*_target`` cubes), ``step`` (F-a5's marker)."""
    sel_sets = [k for k, exp in DATA_SETS.items() if exp in cubes]
    first = cubes[DATA_SETS[sel_sets[0]]] if sel_sets else None
    labels = [(data_name(cubes[DATA_SETS[k]]), k) for k in sel_sets]  # the data the runs used
    ctls = [
        Control(
            "data_set",
            "toggle",
            sel_sets[0] if sel_sets else "mnist1d",
            labels or ["mnist1d"],
            description="data",
            button_width="80px",
        ),
        Control("accuracy", "dropdown", "test_accuracy", [(v, k) for k, v in ACCURACY_VARIANTS.items()]),
        Control("entropy", "toggle", "S/lnN", [("S / ln N", "S/lnN"), ("S [nat]", "S")], button_width="80px"),
        Control("trace", "toggle", "TrK", [("Tr K", "TrK"), ("Tr K / N", "TrK/N")], button_width="80px"),
        seed_control(
            [int(s) for s in first["seed"].values] if first is not None else [], band="mean", description="repeats"
        ),
        Control("normalize", "checkbox", True, description="spectrum / Tr K"),
    ]
    if any(exp + "_target" in cubes for exp in DATA_SETS.values()):  # F-a3 / F-a4 on the authors' kernel
        ctls.append(
            Control("kernel", "toggle", "classifier", [("classifier", "classifier"), ("RND target", "rnd_target")])
        )
    if first is not None:  # every data set's budgets; F-a4 shows the nearest one its data set has
        budgets = sorted({int(b) for k in sel_sets for b in cubes[DATA_SETS[k]]["budget"].values})
        ctls.append(Control("budget", "dropdown", budgets[-1], budgets, description="F-a4 N"))
    if "subsets" in cubes:
        ctls.append(
            Control(
                "a1_budget",
                "dropdown",
                "all",
                [("every N", "all")] + [(f"N = {int(b)}", int(b)) for b in cubes["subsets"]["budget"].values],
                description="subsets",
            )
        )
        kernels = [("raw", "raw")] + ([("cosine", "cosine")] if "subsets_cosine" in cubes else [])
        ctls.append(Control("a1_kernel", "toggle", "raw", kernels, description="F-a1 S of", button_width="80px"))
    if "small" in cubes:
        ctls.append(step_control([int(s) for s in cubes["small"]["step"].values]))
    return ctls


def _nearest_budget(cubes: Mapping[str, Any], s: Mapping[str, Any]) -> int:
    """The budget of the chosen data set's selection cube nearest the ``budget`` setting."""
    budgets = np.asarray(_selection(cubes, s["data_set"])["budget"].values)
    return int(budgets[np.abs(budgets - int(s["budget"])).argmin()])


def _kernel(cubes: Mapping[str, Any], s: Mapping[str, Any]) -> str:
    """The ``kernel`` setting where its cube is there, else the classifier's."""
    kernel = s.get("kernel", "classifier")
    return kernel if DATA_SETS.get(s["data_set"], "") + KERNELS[kernel][0] in cubes else "classifier"


def _any_selection(cubes: Mapping[str, Any]) -> bool:
    return any(exp in cubes for exp in DATA_SETS.values())


#: the figures, each drawn when its experiment's cube is there
FIGURES: list[FigureSpec] = [
    FigureSpec(
        "F-a1",
        lambda c, s: fig_a1_data(
            c["subsets"],
            entropy=s["entropy"],
            trace=s["trace"],
            budget=s["a1_budget"],
            accuracy=s["accuracy"],
            cosine=c["subsets_cosine"] if s.get("a1_kernel") == "cosine" else None,
        ),
        build_a1,
        (("a1_budget", "accuracy"), ("entropy", "trace", "a1_kernel")),
        available=_base.has_cubes("subsets"),
    ),
    FigureSpec(
        "F-a2",
        lambda c, s: fig_a2_data(c, data_set=s["data_set"], accuracy=s["accuracy"], seed=s["seed"]),
        build_lines,
        (("data_set", "accuracy", "seed"),),
        available=_any_selection,
    ),
    FigureSpec(
        "F-a3",
        lambda c, s: fig_a3_data(
            c, data_set=s["data_set"], entropy=s["entropy"], trace=s["trace"], seed=s["seed"], kernel=_kernel(c, s)
        ),
        build_lines,
        (("data_set", "seed"), ("entropy", "trace", "kernel")),
        available=_any_selection,
    ),
    FigureSpec(
        "F-a4",
        lambda c, s: fig_a4_data(
            c,
            data_set=s["data_set"],
            budget=_nearest_budget(c, s),
            seed=s["seed"],
            normalize=s["normalize"],
            kernel=_kernel(c, s),
        ),
        build_lines,
        (("data_set", "budget"), ("seed", "normalize", "kernel")),
        available=_any_selection,
    ),
    FigureSpec(
        "F-a5",
        lambda c, s: fig_a5_data(
            c["small"],
            entropy=s["entropy"],
            seed=_base.seed_or_mean(c, "small", s["seed"]),
            step_marker=s.get("step"),
        ),
        build_lines,
        (("entropy", "seed"), ("step",)),
        available=_base.has_cubes("small"),
    ),
]


# =========================================================================== summary


def summarize(cubes: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers the claims rest on, as a JSON-able dict.

    - ``selection[data_set][budget][method]``: S/ln N, Tr K (initialization) and final
      test accuracy of the selected sets, mean ± standard error over repeats; and
      ``rnd_minus_random`` per budget: the differences of the means with their standard
      errors;
    - ``correlations[variant]`` (:func:`_correlations`): Spearman's ρ of an initial
      collective variable of the ``subsets`` and their final test accuracy, per budget,
      pooled within budgets and pooled over all, with 95 % bootstrap intervals, whether
      they exclude 0 (``resolved``) and the smallest |ρ| the subsets detect;
    - ``small_net``: S/ln N at the start and the end and its change, per seed;
    - ``rnd_target_entropy_normalized`` (in each budget's row, with the ``*_target``
      cubes): S/ln N of the same sets on the RND target network's cosine-normalised kernel
      per method, and RND minus random.
    """
    out: dict[str, Any] = {"note": f"{KERNEL_TEXT}; S/ln N and Tr K at initialization; accuracy at the last step"}
    sel: dict[str, Any] = {}
    num = _stats.as_float
    for key, exp in DATA_SETS.items():
        if exp not in cubes:
            continue
        ds = cubes[exp]
        name = data_name(ds)
        data_set = name if name not in sel else f"{name} ({key})"
        per: dict[str, Any] = {}
        for b in ds["budget"].values.tolist():
            row: dict[str, Any] = {}
            for m in ds["selection"].values.tolist():
                s = ds.sel(budget=b, selection=m)
                row[m] = {
                    "entropy_normalized": _stats.mean_se(s["entropy_normalized"].isel(step=0)),
                    "trace": _stats.mean_se(s["trace"].isel(step=0)),
                    "test_accuracy": _stats.mean_se(at_step(s["test_accuracy"], None)),
                }
            if "rnd" in row and "random" in row:
                row["rnd_minus_random"] = {
                    k: {
                        "diff": _stats.finite(num(row["rnd"][k]["mean"]) - num(row["random"][k]["mean"]), 5),
                        "se": _stats.finite(np.hypot(num(row["rnd"][k]["se"]), num(row["random"][k]["se"])), 5),
                    }
                    for k in ("entropy_normalized", "trace", "test_accuracy")
                }
            tgt = cubes.get(exp + "_target")
            if tgt is not None and b in tgt["budget"].values:  # the same sets on the RND target's kernel
                e = tgt["entropy_normalized"].sel(budget=b).isel(step=0)
                t = {m: _stats.mean_se(e.sel(selection=m)) for m in e["selection"].values.tolist()}
                if "rnd" in t and "random" in t:
                    diff = num(t["rnd"]["mean"]) - num(t["random"]["mean"])
                    se = np.hypot(num(t["rnd"]["se"]), num(t["random"]["se"]))
                    t["rnd_minus_random"] = {"diff": _stats.finite(diff, 5), "se": _stats.finite(se, 5)}
                row["rnd_target_entropy_normalized"] = t
            per[str(int(b))] = row
        sel[data_set] = per
    out["selection"] = sel
    if "subsets" in cubes:
        out["correlations"] = correlations(cubes)
    if "small" in cubes:
        s = cubes["small"]["entropy_normalized"]
        s = s.isel(budget=0) if "budget" in s.dims else s
        start, end = np.atleast_1d(s.isel(step=0).values), np.atleast_1d(at_step(s, None).values)
        out["small_net"] = {
            "start": [_stats.finite(v) for v in start],
            "end": [_stats.finite(v) for v in end],
            "change": [_stats.finite(v) for v in end - start],
            "n_fell": int((end < start).sum()),
            "n_seeds": int(start.size),
        }
    return out


def format_summary(summary: Mapping[str, Any]) -> str:
    """A short plain-text report of :func:`summarize`'s numbers."""
    fmt = _stats.fmt
    lines = _base.summary_head(TITLE, summary.get("note", ""), summary)
    for data_set, per in summary.get("selection", {}).items():
        lines.append(f"Selected sets on {data_set} (mean ± SE over repeats): S/ln N, Tr K at init; final test accuracy")
        for b, row in per.items():
            parts = [
                f"{METHODS[m][0]} {fmt(v['entropy_normalized']['mean'], '.3f')}, {fmt(v['trace']['mean'], '.4g')}, "
                f"{fmt(v['test_accuracy']['mean'], '.3f')}±{fmt(v['test_accuracy']['se'], '.3f')}"
                for m, v in row.items()
                if m in METHODS
            ]
            lines.append(f"  N = {b:>4}: " + " | ".join(parts))
            d = row.get("rnd_minus_random")
            if d:
                lines.append(
                    f"           RND − random: S/ln N {fmt(d['entropy_normalized']['diff'], '+.3f')}±{fmt(d['entropy_normalized']['se'], '.3f')}, "
                    f"Tr K {fmt(d['trace']['diff'], '+.4g')}±{fmt(d['trace']['se'], '.3g')}, "
                    f"accuracy {fmt(d['test_accuracy']['diff'], '+.3f')}±{fmt(d['test_accuracy']['se'], '.3f')}"
                )
            t = row.get("rnd_target_entropy_normalized", {}).get("rnd_minus_random")
            if t:
                lines.append(
                    f"           on the RND target's cosine kernel: S/ln N {fmt(t['diff'], '+.3f')}±{fmt(t['se'], '.3f')}"
                )
        lines.append("")
    for variant, rows in summary.get("correlations", {}).items():
        label = CORRELATION_VARIANTS[variant][2]
        lines.append(
            f"Rank correlation of initial {label} with final test accuracy over random subsets (95 % bootstrap):"
        )
        for b, r in rows.items():
            if r["resolved"]:
                verdict = "resolved"
            else:
                verdict = f"holds 0 (|ρ| ≥ {fmt(r['detectable'], '.3f')} would have been detected)"
            lines.append(
                f"  {'N = ' + b if b.isdigit() else b:<22} ρ = {fmt(r['rho'], '+.3f')} [{fmt(r['low'], '+.3f')}, {fmt(r['high'], '+.3f')}] "
                f"(n = {r['n']}) {verdict}"
            )
        lines.append("")
    if "small_net" in summary:
        s = summary["small_net"]
        lines.append(
            f"Small net: S/ln N change over training {s['change']} (fell in {s['n_fell']}/{s['n_seeds']} seeds)"
        )
    return "\n".join(lines) + "\n"


# =========================================================================== widgets


Workbench = _paper.workbench()


def rerun_config(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The sweep config of :class:`RerunPanel`'s settings: the quick ``selection``
    experiment on ``data_set`` with the chosen ``methods``, ``budgets``, ``repeats`` (the
    seeds 0 … repeats-1), ``pool``, ``width`` and training ``steps``."""
    cfg = configs("quick")["selection" if settings["data_set"] == "mnist1d" else "selection_digits"]
    methods = list(settings["methods"])
    if not methods:
        raise ValueError("methods must name at least one selection method")
    budgets = parse_ints(settings["budgets"], "budgets")
    pool = int(settings["pool"])
    if max(budgets) > pool:
        raise ValueError(f"budgets must not exceed the pool ({pool}), got {budgets}")
    cfg["data"]["n_train"] = pool
    cfg["record"]["probe"] = max(200, max(budgets))  # the whole selected set
    cfg["model"]["width"] = int(settings["width"])
    cfg["train"]["steps"] = int(settings["steps"])
    cfg["grid"] = {"selection": methods, "budget": budgets, "seed": list(range(int(settings["repeats"])))}
    return cfg


def _show_a2(cube: Any) -> Any:
    name = "digits" if data_name(cube) == "digits" else "mnist1d"
    draw = lambda c: build_lines(fig_a2_data({DATA_SETS[name]: c}, data_set=name))  # noqa: E731
    return _base.result_view(cube, ("selection", "budget"), "F-a2", draw)


class RerunPanel(_base.RerunPanel):
    """Rerun the quick selection experiment with chosen settings (:func:`rerun_config`),
    with a progress bar, and show F-a2 of the result; one run at a time."""

    def __init__(
        self,
        out: str | os.PathLike[str] = "runs/data-rerun",
        *,
        data_set: str = "mnist1d",
        methods: Sequence[str] = ("rnd", "random"),
        budgets: str = "10, 30",
        repeats: int = 2,
        pool: int = 1000,
        width: int = 128,
        steps: int = 300,
    ):
        ctls = [
            Control("data_set", "toggle", data_set, list(DATA_SETS), description="data", button_width="80px"),
            Control("methods", "multiple", tuple(methods), [(v[0], k) for k, v in METHODS.items()], rows=3),
            int_list_control("budgets", budgets),
            Control("repeats", "int", repeats, bounds=(1, 50)),
            Control("pool", "int", pool, bounds=(10, 1797)),
            Control("width", "int", width, bounds=(1, 4096)),
            Control("steps", "int", steps, bounds=(1, 100_000)),
        ]
        layout = [["data_set"], ["methods", "budgets", "repeats"], ["pool", "width", "steps"]]
        super().__init__(rerun_config, ctls, out, layout=layout, show=_show_a2)
