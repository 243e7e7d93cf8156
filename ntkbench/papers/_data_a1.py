"""F-a1 of the ``data`` paper: does the eNTK of a training set at initialization predict how
well the network trained on it generalizes? The random-subsets figure, the rank correlations
the claim rests on (:func:`correlations`), the labels the paper's figures share, and
:func:`trim_spectra` (the shipped ``power`` cube keeps the top of each spectrum)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ntkbench import plots
from ntkbench.papers import _stats
from ntkbench.papers._base import at_step, check_choice, config_of
from ntkbench.plots import FigureData

__all__ = [
    "ENTROPY_VARIANTS",
    "TRACE_VARIANTS",
    "ACCURACY_VARIANTS",
    "KERNEL_TEXT",
    "CORRELATION_VARIANTS",
    "data_name",
    "data_note",
    "fig_a1_data",
    "build_a1",
    "correlations",
    "trim_spectra",
]

ENTROPY_VARIANTS = {"S/lnN": ("entropy_normalized", "S / ln N"), "S": ("entropy", "S [nat]")}
TRACE_VARIANTS = {"TrK": ("trace", "Tr K"), "TrK/N": ("trace_per_sample", "Tr K / N")}
ACCURACY_VARIANTS = {"test_accuracy": "test accuracy", "test_loss": "test loss (MSE)", "accuracy": "train accuracy"}
#: the kernel the classifier's measures are of
KERNEL_TEXT = "traced eNTK of the whole selected set, sum over outputs"


def data_name(ds: Any) -> str:
    """The data set a cube's runs used (``mnist1d``, ``digits``, ``mnist_idx``, ...), from
    its config; ``"?"`` if the config does not say."""
    return str(config_of(ds).get("data", {}).get("name", "?"))


def data_note(ds: Any) -> str:
    cfg = config_of(ds)
    d, m = cfg.get("data", {}), cfg.get("model", {})
    if m.get("name") == "cnn":
        trunk = "-".join(str(c) for c in m.get("channels") or [m.get("width")] * int(m.get("depth", 1)))
        net = f"CNN conv {trunk}" + (f", dense {m['hidden']}" if m.get("hidden") else "")
    else:
        net = f"MLP {m.get('width')}×{m.get('depth')}"
    return f"{d.get('name')}, pool {d.get('n_train')}, test {d.get('n_test')}; {net}"


def fig_a1_data(
    ds: Any,
    *,
    entropy: str = "S/lnN",
    trace: str = "TrK",
    budget: Any = "all",
    accuracy: str = "test_accuracy",
    cosine: Any = None,
) -> FigureData:
    """Figure data of F-a1 from the ``subsets`` cube: panels ``"a1-entropy"`` and
    ``"a1-trace"`` (sources ``"…-points"``: x = S/ln N or Tr K at initialization, y = the
    final ``accuracy``, one point per subset, coloured by budget), for every budget or one.
    ``cosine``: the ``subsets_cosine`` cube; the entropy is then of the cosine-normalised
    kernel of the same subsets (the trace stays the kernel's own)."""
    check_choice("entropy", entropy, ENTROPY_VARIANTS)
    check_choice("trace", trace, TRACE_VARIANTS)
    check_choice("accuracy", accuracy, ACCURACY_VARIANTS)
    budgets = [int(b) for b in ds["budget"].values]
    if budget != "all" and int(budget) not in budgets:
        raise ValueError(f"budget must be 'all' or one of {budgets}, got {budget!r}")
    shown = budgets if budget == "all" else [int(budget)]
    colors = dict(zip(budgets, plots.palette(len(budgets), "Viridis256"), strict=True))
    y_all = at_step(ds[accuracy], None)
    corr = {}
    data = plots.figure_data("F-a1", "")
    e_var, e_label = ENTROPY_VARIANTS[entropy]
    for col, (var, label), log_x, src in (
        ("entropy", (e_var, e_label + (", cosine-normalised" if cosine is not None else "")), False, cosine),
        ("trace", TRACE_VARIANTS[trace], True, None),
    ):
        x_all = (ds if src is None else src)[var].isel(step=0)
        pts: dict[str, list] = {k: [] for k in ("x", "y", "budget", "seed", "color", "label")}
        for b in shown:
            xs, ys = np.asarray(x_all.sel(budget=b).values, float), np.asarray(y_all.sel(budget=b).values, float)
            r = _stats.rank_correlation(xs, ys, seed=b)
            corr[(col, b)] = r
            ok = np.isfinite(xs) & np.isfinite(ys) & ((xs > 0) if log_x else True)
            pts["x"] += xs[ok].tolist()
            pts["y"] += ys[ok].tolist()
            pts["budget"] += [b] * int(ok.sum())
            pts["seed"] += [int(s) for s in ds["seed"].values[ok]]
            pts["color"] += [colors[b]] * int(ok.sum())
            pts["label"] += [f"N = {b}: ρ = {r['rho']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]"] * int(ok.sum())
        key = f"a1-{col}"
        data["sources"][f"{key}-points"] = pts
        plots.set_panel(
            data,
            key,
            f"{ACCURACY_VARIANTS[accuracy]} vs {label} at initialization",
            f"{label} (step 0)",
            ACCURACY_VARIANTS[accuracy],
            log_x=log_x,
            log_y=False,
        )
    data["panels"] = [["a1-entropy", "a1-trace"]]
    data["legend"] = ["a1-entropy", "a1-trace"]
    n_subsets = ds.sizes["seed"]
    data["header"] = (
        f"<b>F-a1 generalization vs collective variables</b> — {n_subsets} random subsets per budget; "
        f"{data_note(ds)}; {KERNEL_TEXT}; ρ: Spearman within each budget, 95 % bootstrap interval"
    )
    return data


def build_a1(data: FigureData, panel_size: tuple[int, int] = (400, 360)) -> Any:
    """The F-a1 layout: scatter panels with the correlations in their legends."""
    from bokeh.models import ColumnDataSource, HoverTool

    def draw(fig: Any, key: str) -> None:
        src = ColumnDataSource(dict(data["sources"][f"{key}-points"]), name=f"{key}-points")
        r = fig.scatter(
            "x", "y", source=src, color="color", size=7, alpha=0.75, line_color="white", legend_field="label"
        )
        fig.add_tools(
            HoverTool(
                renderers=[r],
                tooltips=[("budget", "@budget"), ("subset", "@seed"), ("x", "@x{%0.4g}"), ("y", "@y{%0.3f}")],
                formatters={"@x": "printf", "@y": "printf"},
            )
        )
        plots.panel_style(fig, legend=True, beside="right")  # the points fill every corner

    return plots.panel_grid(data, draw, panel_size=panel_size, name="F-a1", si_y=None)


#: F-a1's measure variants -> (experiment, variable, label): within a budget S and S/ln N
#: (and Tr K and Tr K/N) rank the subsets alike, so the pooled-over-all row tells them apart
CORRELATION_VARIANTS: dict[str, tuple[str, str, str]] = {
    "S/lnN": ("subsets", "entropy_normalized", "S / ln N"),
    "S/lnN cosine": ("subsets_cosine", "entropy_normalized", "S / ln N of the cosine-normalised kernel"),
    "TrK": ("subsets", "trace", "Tr K"),
    "TrK/N": ("subsets", "trace_per_sample", "Tr K / N"),
}


def correlations(cubes: Mapping[str, Any]) -> dict[str, Any]:
    """Spearman's ρ of each :data:`CORRELATION_VARIANTS` at initialization with the final
    test accuracy over the ``subsets``: per budget (``"200"``, ...),
    ``pooled_within_budget`` (ranks within each budget, so each budget's mean accuracy and
    mean measure are removed) and ``pooled_all`` (ranks over every subset: mostly N). Each
    with a 95 % bootstrap interval (2 000 resamples), ``resolved`` (it excludes 0) and
    ``detectable`` (:func:`ntkbench.papers._stats.detectable_rho`)."""
    acc_da = at_step(cubes["subsets"]["test_accuracy"], None)
    out: dict[str, Any] = {}
    for variant, (exp, var, _) in CORRELATION_VARIANTS.items():
        if exp not in cubes:
            continue
        x0 = cubes[exp][var].isel(step=0)
        budgets = [b for b in acc_da["budget"].values if b in x0["budget"].values]
        x0, acc = x0.sel(budget=budgets, seed=acc_da["seed"]), acc_da.sel(budget=budgets)
        res = {
            str(int(b)): _stats.rounded(
                _stats.rank_correlation(x0.sel(budget=b).values, acc.sel(budget=b).values, seed=int(b))
            )
            for b in budgets
        }
        xb, yb = x0.transpose("budget", "seed").values.ravel(), acc.transpose("budget", "seed").values.ravel()
        groups = np.repeat(budgets, acc.sizes["seed"])
        res["pooled_within_budget"] = _stats.rounded(_stats.rank_correlation(xb, yb, groups=groups))
        res["pooled_all"] = _stats.rounded(_stats.rank_correlation(xb, yb))
        out[variant] = res
    return out


def trim_spectra(cubes: Mapping[str, Any], top: int = 32) -> dict[str, Any]:
    """``cubes`` with each ``eigenvalues`` cut to its ``top`` largest (``eigen_index`` <
    ``top``): every scalar measure stays, and a cube of thousands of subsets stays small (the
    whole spectra of 6 000 subsets of up to 1 000 points are about 100 MB)."""
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive int, got {top!r}")
    out = {}
    for name, ds in cubes.items():
        if "eigen_index" in ds.dims and ds.sizes["eigen_index"] > top:
            ds = ds.isel(eigen_index=slice(0, top))
            ds.attrs = {**ds.attrs, "eigenvalues_kept": f"the top {top} of each spectrum"}
        out[name] = ds
    return out
