"""The figures of one result cube: spectrum, measure vs step, scaling with width, width ×
step heat map, kernel image (each a pure ``*_data`` function and its builder), in-place
:func:`update`, and the :data:`FIGURES` registry of ``ntkbench export``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ntkbench._types import Columns, SeedSel, SpectrumBy
from ntkbench.plots._layout import place_legend
from ntkbench.plots._select import (
    _drop_extra,
    _finished,
    _resolve_step,
    _resolve_widths,
    _select_seed,
    check_cube,
    finite_mask,
    label,
    measures,
)
from ntkbench.plots._style import (
    _TICKS_125,
    _colors_for,
    _dashed_span,
    _fixed_ticks,
    _hover,
    legend_style,
    new_figure,
    style,
)


def update(fig: Any, data: Mapping[str, Columns]) -> None:
    """Redraw a figure in place: assign each ``data[name]`` to the figure's
    ``ColumnDataSource`` named ``name`` (as returned by the ``*_data`` functions)."""
    for name, cols in data.items():
        src = fig.select_one({"name": name})
        if src is None:
            raise ValueError(f"figure has no data source named {name!r}")
        src.data = dict(cols)


# --------------------------------------------------------------------------- spectrum


def spectrum_data(
    ds: Any,
    *,
    width: int | Sequence[int] | None = None,
    step: int | Sequence[int] | None = None,
    seed: SeedSel = "mean",
    eigen_range: tuple[int, int] | None = None,
    by: SpectrumBy = "width",
    log: bool = True,
) -> dict[str, Columns]:
    """Columns of :func:`spectrum_plot`: eigenvalue vs rank (``eigen_index + 1``).

    ``by="width"``: one line per width at one ``step`` (default: last). ``by="step"``: one
    line per step (default: all) at one ``width`` (default: the largest). ``eigen_range``
    is an inclusive ``(first, last)`` range of ``eigen_index``. With ``log`` non-positive
    eigenvalues are dropped (they cannot be drawn on a log axis).

    Returns ``{"lines": {xs, ys, color, label}, "points": {x, y, eigen_index, width, step,
    label, color}}``.
    """
    check_cube(ds, "eigenvalues")
    ds = _finished(ds)
    if by not in ("step", "width"):
        raise ValueError(f"by must be 'step' or 'width', got {by!r}")
    da = ds["eigenvalues"]
    if eigen_range is not None:
        lo, hi = (int(v) for v in eigen_range)
        if lo > hi:
            raise ValueError(f"eigen_range must be (first, last) with first <= last, got {eigen_range!r}")
        da = da.sel(eigen_index=slice(lo, hi))
    da, _ = _select_seed(da, seed)
    da = _drop_extra(da, ("width", "step", "eigen_index"))
    has_width = "width" in da.dims
    all_steps = ds["step"].values.tolist()
    if by == "width":
        st = _resolve_step(ds, step if not isinstance(step, Sequence) else step[-1])
        groups = [(w, st) for w in _resolve_widths(ds, width)]
        colors = (
            _colors_for([g[0] for g in groups], ds["width"].values.tolist(), "Viridis256") if has_width else ["#440154"]
        )
    else:
        if has_width:
            w = width if width is not None else ds["width"].values[-1]
            if isinstance(w, Sequence):
                w = w[-1]
            w = _resolve_widths(ds, int(w))[0]
        else:
            w = None
        if step is None:
            sts = all_steps
        else:
            sts = sorted({_resolve_step(ds, s) for s in ([step] if isinstance(step, (int, np.integer)) else step)})
        groups = [(w, s) for s in sts]
        colors = _colors_for(sts, all_steps, "Plasma256")
    lines: Columns = {"xs": [], "ys": [], "color": [], "label": []}
    points: Columns = {k: [] for k in ("x", "y", "eigen_index", "width", "step", "label", "color")}
    for (w, s), c in zip(groups, colors, strict=True):
        sel = {"step": s}
        if w is not None:
            sel["width"] = w
        y = np.asarray(da.sel(sel).values, dtype=float)
        idx = np.asarray(da["eigen_index"].values)
        x = idx + 1.0
        ok = finite_mask(x, y, log, log)
        name = f"width {w}" if by == "width" else f"step {s}"
        if w is None and by == "width":
            name = f"step {s}"
        lines["xs"].append(x[ok].tolist())
        lines["ys"].append(y[ok].tolist())
        lines["color"].append(c)
        lines["label"].append(name)
        n = int(ok.sum())
        points["x"] += x[ok].tolist()
        points["y"] += y[ok].tolist()
        points["eigen_index"] += idx[ok].tolist()
        points["width"] += [w if w is not None else -1] * n
        points["step"] += [s] * n
        points["label"] += [name] * n
        points["color"] += [c] * n
    return {"lines": lines, "points": points}


def spectrum_plot(
    ds: Any,
    *,
    width: int | Sequence[int] | None = None,
    step: int | Sequence[int] | None = None,
    seed: SeedSel = "mean",
    eigen_range: tuple[int, int] | None = None,
    by: SpectrumBy = "width",
    log: bool = True,
    **figure_kw: Any,
) -> Any:
    """eNTK spectrum: eigenvalue vs rank on log–log axes, one line per width or per step.

    Parameters are those of :func:`spectrum_data` (``width`` selects network widths);
    ``figure_kw`` go to ``bokeh.plotting.figure`` (``height``; the default size is 520 × 380).

    Returns a ``bokeh.plotting.figure`` with sources named ``"lines"`` and ``"points"``.

    Example
    -------
    >>> from ntkbench.testing import synthetic_cube
    >>> fig = spectrum_plot(synthetic_cube(), by="step", width=64)
    >>> fig.select_one({"name": "lines"}).data["label"][:2]
    ['step 0', 'step 10']
    """
    from bokeh.models import ColumnDataSource, HoverTool

    data = spectrum_data(ds, width=width, step=step, seed=seed, eigen_range=eigen_range, by=by, log=log)
    title = "eNTK spectrum"
    if by == "width":
        title += f" at step {_resolve_step(ds, step if not isinstance(step, Sequence) else step[-1])}"
    elif "width" in ds.dims:
        title += f" at width {data['points']['width'][0] if data['points']['width'] else ''}"
    fig = new_figure(title, "rank i (eigen_index + 1)", label(ds, "eigenvalues"), log, log, **figure_kw)
    lines = ColumnDataSource(data["lines"], name="lines")
    points = ColumnDataSource(data["points"], name="points")
    fig.multi_line("xs", "ys", source=lines, line_color="color", line_width=2, legend_field="label")
    r = fig.scatter("x", "y", source=points, color="color", size=4, alpha=0.7)
    fig.add_tools(
        HoverTool(
            renderers=[r],
            tooltips=[
                ("", "@label"),
                ("eigen_index", "@eigen_index"),
                ("eigenvalue", "@y{%0.6g}"),
            ],
            formatters={"@y": "printf"},
        )
    )
    style(fig)
    fig.xaxis[0].tags = ["ticks_125"]
    if log:
        _fixed_ticks(fig.xaxis[0], _TICKS_125)
    legend_style(fig, "top_right")
    place_legend(fig)  # a free corner, else beside the plot
    return fig


# --------------------------------------------------------------------------- measure vs step


def measure_data(
    ds: Any,
    measure: str = "entropy",
    *,
    widths: int | Sequence[int] | None = None,
    seed: SeedSel = "mean",
    x: str = "step",
    log_x: bool = False,
    log_y: bool = False,
) -> dict[str, Columns]:
    """Columns of :func:`measure_plot`: a measure vs ``x`` (default ``step``), one line
    per width; with ``seed="mean"`` the mean over seeds and a ± std band.

    Runs whose training diverged (``status`` variable, :func:`ntkbench.cube.finished`)
    are left out of the lines, bands and points, and drawn apart in ``"diverged"``: one
    line per diverged run up to where it became non-finite, labelled as left out.

    Returns ``{"lines": {xs, ys, color, label}, "bands": {xs, ys, color},
    "points": {x, y, std, width, label, color}, "diverged": {xs, ys, color, run},
    "diverged_end": {x, y, color, run}}`` (the last finite point of each diverged run,
    drawn as a cross; the legend column is ``run``, a field apart from the lines' ``label``).
    """
    check_cube(ds, measure)
    raw, ds = ds, _finished(ds)
    da = ds[measure]
    if x not in da.dims:
        raise ValueError(f"x must be a dim of {measure!r} {tuple(da.dims)}, got {x!r}")
    if "eigen_index" in da.dims:
        raise ValueError(f"measure must be a per-step scalar, {measure!r} has an eigen_index dim")
    mean, std = _select_seed(da, seed)
    mean = _drop_extra(mean, ("width", x))
    std = None if std is None else _drop_extra(std, ("width", x))
    ws = _resolve_widths(ds, widths)
    colors = _colors_for(ws, ds["width"].values.tolist(), "Viridis256") if ws != [None] else ["#440154"]
    xv = np.asarray(ds[x].values, dtype=float)
    lines: Columns = {"xs": [], "ys": [], "color": [], "label": []}
    bands: Columns = {"xs": [], "ys": [], "color": []}
    points: Columns = {k: [] for k in ("x", "y", "std", "width", "label", "color")}
    for w, c in zip(ws, colors, strict=True):
        m = mean if w is None else mean.sel(width=w)
        y = np.asarray(m.transpose(x).values, dtype=float)
        s = (
            None
            if std is None
            else np.asarray((std if w is None else std.sel(width=w)).transpose(x).values, dtype=float)
        )
        ok = finite_mask(xv, y, log_x, log_y)
        name = f"width {w}" if w is not None else measure
        if not ok.any() and ds.attrs.get("diverged_left_out"):
            name += " (no finished run)"
        lines["xs"].append(xv[ok].tolist())
        lines["ys"].append(y[ok].tolist())
        lines["color"].append(c)
        lines["label"].append(name)
        if s is not None and np.any(s[ok] > 0):
            lo, hi = y[ok] - s[ok], y[ok] + s[ok]
            if log_y:  # keep the band drawable on a log axis
                lo = np.maximum(lo, y[ok] * 1e-3)
            bands["xs"].append(xv[ok].tolist() + xv[ok][::-1].tolist())
            bands["ys"].append(hi.tolist() + lo[::-1].tolist())
            bands["color"].append(c)
        n = int(ok.sum())
        points["x"] += xv[ok].tolist()
        points["y"] += y[ok].tolist()
        points["std"] += (s[ok] if s is not None else np.zeros(n)).tolist()
        points["width"] += [w if w is not None else -1] * n
        points["label"] += [name] * n
        points["color"] += [c] * n
    diverged = _diverged_lines(raw, measure, ws, colors, seed, x, log_x, log_y)
    ends: Columns = {
        "x": [xs[-1] for xs in diverged["xs"]],
        "y": [ys[-1] for ys in diverged["ys"]],
        "color": list(diverged["color"]),
        "run": list(diverged["run"]),
    }
    return {"lines": lines, "bands": bands, "points": points, "diverged": diverged, "diverged_end": ends}


def _diverged_lines(
    ds: Any, measure: str, ws: list, colors: list[str], seed: SeedSel, x: str, log_x: bool, log_y: bool
) -> Columns:
    """One line per diverged run (of the widths ``ws`` and the seed selection) of
    ``measure`` vs ``x``, up to where it became non-finite."""
    from ntkbench.cube import diverged

    out: Columns = {"xs": [], "ys": [], "color": [], "run": []}
    bad = diverged(ds)
    if not bool(bad.any()) or x not in ds[measure].dims:
        return out
    da = _drop_extra(ds[measure], ("width", "seed", x))
    bad = _drop_extra(bad, ("width", "seed"))
    xv = np.asarray(ds[x].values, dtype=float)
    for w, c in zip(ws, colors, strict=True):
        dw, bw = (da, bad) if w is None else (da.sel(width=w), bad.sel(width=w) if "width" in bad.dims else bad)
        seeds = dw["seed"].values.tolist() if "seed" in dw.dims else [None]
        for sv in seeds:
            if not isinstance(seed, str) and sv is not None and sv != seed:
                continue
            flag = bw if sv is None or "seed" not in bw.dims else bw.sel(seed=sv)
            if not bool(flag):
                continue
            y = np.asarray((dw if sv is None else dw.sel(seed=sv)).transpose(x).values, dtype=float)
            ok = finite_mask(xv, y, log_x, log_y)
            if not ok.any():
                continue
            run = ", ".join(
                t for t in (f"width {w}" if w is not None else "", f"seed {sv}" if sv is not None else "") if t
            )
            out["xs"].append(xv[ok].tolist())
            out["ys"].append(y[ok].tolist())
            out["color"].append(c)
            out["run"].append(f"diverged, left out ({run})" if run else "diverged, left out")
    return out


def measure_plot(
    ds: Any,
    measure: str = "entropy",
    *,
    widths: int | Sequence[int] | None = None,
    seed: SeedSel = "mean",
    x: str = "step",
    log_x: bool = False,
    log_y: bool | None = None,
    step_marker: int | None = None,
    **figure_kw: Any,
) -> Any:
    """A measure (entropy, trace, loss, …) vs step, one line per width, mean ± std over seeds.

    ``log_y=None`` picks log for losses and linear otherwise. ``step_marker`` draws a
    vertical line at that step (the Explorer moves it with its step slider); the marker is
    the ``Span`` named ``"step_marker"``.

    Returns a figure with sources ``"lines"``, ``"bands"``, ``"points"``, ``"diverged"`` and
    ``"diverged_end"`` (runs whose training diverged: dashed, a cross where they ended, left
    out of the mean).

    Example
    -------
    >>> from ntkbench.testing import synthetic_cube
    >>> fig = measure_plot(synthetic_cube(), "trace", widths=[16, 256])
    >>> fig.select_one({"name": "lines"}).data["label"]
    ['width 16', 'width 256']
    """
    from bokeh.models import ColumnDataSource, HoverTool

    if log_y is None:
        log_y = "loss" in measure
    data = measure_data(ds, measure, widths=widths, seed=seed, x=x, log_x=log_x, log_y=log_y)
    fig = new_figure(
        str(ds[measure].attrs.get("long_name", measure)), label(ds, x), label(ds, measure), log_x, log_y, **figure_kw
    )
    bands = ColumnDataSource(data["bands"], name="bands")
    lines = ColumnDataSource(data["lines"], name="lines")
    points = ColumnDataSource(data["points"], name="points")
    diverged = ColumnDataSource(data["diverged"], name="diverged")
    band_r = fig.patches("xs", "ys", source=bands, fill_color="color", fill_alpha=0.18, line_color=None)
    line_r = fig.multi_line("xs", "ys", source=lines, line_color="color", line_width=2, legend_field="label")
    fig.multi_line(
        "xs", "ys", source=diverged, line_color="color", line_width=1.5, line_dash="dashed", legend_field="run"
    )
    diverged_end = ColumnDataSource(data["diverged_end"], name="diverged_end")
    fig.scatter("x", "y", source=diverged_end, color="color", marker="x", size=11, line_width=2)
    r = fig.scatter("x", "y", source=points, color="color", size=5)
    if data["diverged"]["xs"] and any(data["lines"]["xs"]):
        # the finished runs set the y range: a diverged run's blow-up leaves the top of the
        # plot (dashed, its cross where it ended) instead of flattening every other line
        fig.y_range.renderers = [band_r, line_r, r]  # pyright: ignore[reportAttributeAccessIssue]  a DataRange1d
    fig.add_tools(
        HoverTool(
            renderers=[r],
            tooltips=[("", "@label"), (x, "@x{%0.6g}"), (measure, "@y{%0.6g} ± @std{%0.3g}")],
            formatters={"@x": "printf", "@y": "printf", "@std": "printf"},
        )
    )
    _dashed_span(fig, "step_marker", step_marker, color="#999999", width=1.5)
    style(fig)
    legend_style(fig, "top_right")
    place_legend(fig)  # a free corner, else beside the plot
    return fig


# --------------------------------------------------------------------------- scaling


def power_law_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares fit of ``y = a · x ** b`` in log–log space.

    Returns ``(a, b, r2)`` with ``r2`` the coefficient of determination of the log-log
    linear fit. Needs at least two points with positive ``x`` and ``y``.

    Example
    -------
    >>> a, b, r2 = power_law_fit(np.array([1.0, 2, 4]), np.array([3.0, 6, 12]))
    >>> round(a, 6), round(b, 6), round(r2, 6)
    (3.0, 1.0, 1.0)
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        raise ValueError("power_law_fit needs at least two points with positive x and y")
    lx, ly = np.log(x[ok]), np.log(y[ok])
    b, loga = np.polyfit(lx, ly, 1)
    resid = ly - (loga + b * lx)
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return float(np.exp(loga)), float(b), r2


def scaling_data(
    ds: Any,
    measure: str = "entropy",
    *,
    step: int | None = -1,
    widths: Sequence[int] | None = None,
    seed: SeedSel = "mean",
) -> dict[str, Columns]:
    """Columns of :func:`scaling_plot`: a measure vs width at one step, with a power-law fit.

    ``step`` is a step value or a negative position (``-1`` = last recorded step).

    Returns ``{"points": {x, y, std, step}, "seeds": {x, y, seed}, "errors": {x, lower,
    upper}, "fit": {xs, ys, label}}``; the fit label reads ``∝ width^b (R² = r2)``.
    Diverged runs (:func:`ntkbench.cube.finished`) are left out of the points and the fit,
    and the label says how many.
    """
    check_cube(ds, measure)
    if "width" not in ds[measure].dims:
        raise ValueError(f"scaling plots need a width dim; {measure!r} has {tuple(ds[measure].dims)}")
    ds = _finished(ds)
    left_out = int(ds.attrs.get("diverged_left_out", 0))
    st = _resolve_step(ds, step)
    ws = _resolve_widths(ds, widths)
    da = ds[measure].sel(step=st, width=ws)
    mean, std = _select_seed(da, seed)
    mean = _drop_extra(mean, ("width",))
    x = np.asarray(ws, dtype=float)
    y = np.asarray(mean.transpose("width").values, dtype=float)
    s = (
        np.zeros_like(y)
        if std is None
        else np.asarray(_drop_extra(std, ("width",)).transpose("width").values, dtype=float)
    )
    seeds: Columns = {"x": [], "y": [], "seed": []}
    if "seed" in da.dims and seed == "mean":
        per = _drop_extra(da, ("width", "seed")).transpose("width", "seed")
        for j, sv in enumerate(per["seed"].values.tolist()):
            seeds["x"] += x.tolist()
            seeds["y"] += np.asarray(per.values[:, j], dtype=float).tolist()
            seeds["seed"] += [sv] * len(x)
    ok = finite_mask(x, y, True, True)
    fit: Columns = {"xs": [], "ys": [], "label": []}
    if ok.sum() >= 2:
        a, b, r2 = power_law_fit(x[ok], y[ok])
        xf = np.geomspace(x[ok].min(), x[ok].max(), 50)
        note = f"; {left_out} diverged run{'s' if left_out != 1 else ''} left out" if left_out else ""
        fit = {"xs": [xf.tolist()], "ys": [(a * xf**b).tolist()], "label": [f"∝ width^{b:.3f}  (R² = {r2:.3f}{note})"]}
    lower = np.where(y[ok] - s[ok] > 0, y[ok] - s[ok], y[ok] * 1e-3)
    return {
        "points": {"x": x[ok].tolist(), "y": y[ok].tolist(), "std": s[ok].tolist(), "step": [st] * int(ok.sum())},
        "seeds": seeds,
        "errors": {"x": x[ok].tolist(), "lower": lower.tolist(), "upper": (y[ok] + s[ok]).tolist()},
        "fit": fit,
    }


def scaling_plot(
    ds: Any,
    measure: str = "entropy",
    *,
    step: int | None = -1,
    widths: Sequence[int] | None = None,
    seed: SeedSel = "mean",
    **figure_kw: Any,
) -> Any:
    """A measure vs width at one step on log–log axes, with a power-law fit whose exponent
    and R² are in the legend. Seeds are drawn faintly, the mean with ± std whiskers.

    Example
    -------
    >>> from ntkbench.testing import synthetic_cube
    >>> fig = scaling_plot(synthetic_cube(), "trace")
    >>> fig.select_one({"name": "fit"}).data["label"][0].startswith("∝ width^")
    True
    """
    from bokeh.models import ColumnDataSource, HoverTool, Whisker

    data = scaling_data(ds, measure, step=step, widths=widths, seed=seed)
    st = _resolve_step(ds, step)
    name = str(ds[measure].attrs.get("long_name", measure))
    fig = new_figure(f"{name} at step {st}", label(ds, "width"), label(ds, measure), True, True, **figure_kw)
    srcs = {k: ColumnDataSource(v, name=k) for k, v in data.items()}
    fig.scatter("x", "y", source=srcs["seeds"], color="#7f7f7f", alpha=0.45, size=5)
    whisker = Whisker(
        base="x", lower="lower", upper="upper", source=srcs["errors"], line_color="#21918c", name="whiskers"
    )
    for head in (whisker.upper_head, whisker.lower_head):
        if head is not None:
            head.line_color = "#21918c"  # pyright: ignore[reportAttributeAccessIssue]  Whisker's heads are TeeHeads
    fig.add_layout(whisker)
    # a real glyph along the error bars, so the auto ranges include them
    fig.segment("x", "lower", "x", "upper", source=srcs["errors"], line_color="#21918c", line_width=1)
    fig.multi_line(
        "xs", "ys", source=srcs["fit"], line_color="#d1495b", line_width=2, line_dash="dashed", legend_field="label"
    )
    r = fig.scatter("x", "y", source=srcs["points"], color="#21918c", size=9, line_color="white")
    fig.add_tools(
        HoverTool(
            renderers=[r],
            tooltips=[("width", "@x{%d}"), (measure, "@y{%0.6g} ± @std{%0.3g}"), ("step", "@step")],
            formatters={"@x": "printf", "@y": "printf", "@std": "printf"},
        )
    )
    style(fig)
    _fixed_ticks(fig.xaxis[0], ds["width"].values.tolist())
    legend_style(fig, "top_left")
    place_legend(fig)  # a free corner, else beside the plot
    return fig


# --------------------------------------------------------------------------- heatmap


def heatmap_data(ds: Any, measure: str = "entropy", *, seed: SeedSel = "mean") -> dict[str, Columns]:
    """Columns of :func:`heatmap_plot`: one cell per (width, step) with the measure value.

    Returns ``{"cells": {step, width, step_label, width_label, value}}``; the ``*_label``
    columns are the categorical axis factors.
    """
    check_cube(ds, measure)
    ds = _finished(ds)
    mean, _ = _select_seed(ds[measure], seed)
    ws = _resolve_widths(ds, None)
    mean = _drop_extra(mean, ("width", "step"))
    cells: Columns = {k: [] for k in ("step", "width", "step_label", "width_label", "value")}
    for w in ws:
        m = mean if w is None else mean.sel(width=w)
        for s, v in zip(
            ds["step"].values.tolist(), np.asarray(m.transpose("step").values, dtype=float).tolist(), strict=True
        ):
            cells["step"].append(s)
            cells["width"].append(w if w is not None else -1)
            cells["step_label"].append(str(s))
            cells["width_label"].append(str(w) if w is not None else "—")
            cells["value"].append(v)
    return {"cells": cells}


def heatmap_plot(
    ds: Any, measure: str = "entropy", *, seed: SeedSel = "mean", palette: str = "Viridis256", **figure_kw: Any
) -> Any:
    """Width × step heatmap of a measure with a colour bar (categorical axes, cube order).

    Example
    -------
    >>> from ntkbench.testing import synthetic_cube
    >>> fig = heatmap_plot(synthetic_cube(), "entropy")
    >>> len(fig.select_one({"name": "cells"}).data["value"])
    18
    """
    import bokeh.palettes as bp
    from bokeh.models import ColorBar, ColumnDataSource, FactorRange, LinearColorMapper
    from bokeh.plotting import figure

    data = heatmap_data(ds, measure, seed=seed)
    cells = data["cells"]
    vals = np.asarray(cells["value"], dtype=float)
    finite = vals[np.isfinite(vals)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    mapper = LinearColorMapper(
        palette=getattr(bp, palette), low=lo, high=hi if hi > lo else lo + 1, nan_color="#dddddd"
    )
    x_f = [str(s) for s in ds["step"].values.tolist()]
    y_f = list(dict.fromkeys(cells["width_label"]))
    fig = figure(
        title=str(ds[measure].attrs.get("long_name", measure)),
        x_range=FactorRange(factors=x_f),
        y_range=FactorRange(factors=y_f),
        x_axis_label=label(ds, "step"),
        y_axis_label=label(ds, "width"),
        width=figure_kw.pop("width", 560),
        height=figure_kw.pop("height", 360),
        tools="hover,save",
        **figure_kw,
    )
    src = ColumnDataSource(cells, name="cells")
    fig.rect(
        "step_label",
        "width_label",
        1,
        1,
        source=src,
        fill_color={"field": "value", "transform": mapper},
        line_color="white",
    )
    hover = _hover(fig)
    hover.tooltips = [("width", "@width"), ("step", "@step"), (measure, "@value{%0.6g}")]
    hover.formatters = {"@value": "printf"}
    bar = ColorBar(
        color_mapper=mapper,
        title=label(ds, measure),
        title_text_font_style="normal",
        title_text_font_size="10pt",
        major_label_text_font_size="10pt",
        width=14,
    )
    fig.add_layout(bar, "right")
    style(fig)
    fig.grid.grid_line_color = None
    fig.axis.axis_line_color = None
    fig.axis.major_tick_line_color = None
    return fig


# --------------------------------------------------------------------------- kernel image


def kernel_image(K: Any, *, title: str = "eNTK", palette: str | None = None, **figure_kw: Any) -> Any:
    """Image of a kernel matrix ``K`` (N1, N2), row 0 at the top, with a colour bar.

    Kernels with negative entries use a diverging palette centred at zero (RdBu), others
    Viridis. Source ``"image"`` holds the matrix.

    Example
    -------
    >>> import numpy as np
    >>> fig = kernel_image(np.eye(3))
    >>> fig.select_one({"name": "image"}).data["image"][0].shape
    (3, 3)
    """
    import bokeh.palettes as bp
    from bokeh.models import ColorBar, ColumnDataSource, HoverTool, LinearColorMapper, Range1d
    from bokeh.plotting import figure

    K = np.asarray(K, dtype=float)
    if K.ndim != 2:
        raise ValueError(f"K must be a 2-D kernel matrix (N1, N2), got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError("K contains NaN or Inf entries")
    n1, n2 = K.shape
    if np.any(K < 0):
        m = float(np.abs(K).max()) or 1.0
        pal = bp.interp_palette(tuple(reversed(bp.RdBu11)), 256) if palette is None else getattr(bp, palette)
        mapper = LinearColorMapper(palette=pal, low=-m, high=m)
    else:
        pal = bp.Viridis256 if palette is None else getattr(bp, palette)
        mapper = LinearColorMapper(
            palette=pal, low=float(K.min()), high=float(K.max()) if K.max() > K.min() else float(K.min()) + 1
        )
    side = figure_kw.pop("height", 420)
    fig = figure(
        title=title,
        x_range=Range1d(start=-0.5, end=n2 - 0.5, bounds=(-0.5, n2 - 0.5)),
        y_range=Range1d(start=n1 - 0.5, end=-0.5, bounds=(-0.5, n1 - 0.5)),
        x_axis_label="sample j",
        y_axis_label="sample i",
        width=figure_kw.pop("width", int(side * n2 / n1) + 90),
        height=side,
        tools="pan,wheel_zoom,reset,save",
        **figure_kw,
    )
    # Bokeh draws image row 0 at the low end of y; the flipped y range puts it on top.
    # Cells are centred on integer (i, j) so the hover's rounded coordinates are exact.
    src = ColumnDataSource({"image": [K]}, name="image")
    r = fig.image("image", x=-0.5, y=-0.5, dw=n2, dh=n1, source=src, color_mapper=mapper)  # pyright: ignore[reportCallIssue]  image() takes color_mapper (Bokeh's stub omits it)
    fig.add_tools(
        HoverTool(
            renderers=[r],
            tooltips=[("i", "$y{0}"), ("j", "$x{0}"), ("K", "@image{%0.6g}")],
            formatters={"@image": "printf"},
        )
    )
    fig.add_layout(ColorBar(color_mapper=mapper, width=14, major_label_text_font_size="10pt"), "right")
    style(fig)
    fig.grid.grid_line_color = None
    return fig


# --------------------------------------------------------------------------- registry


def _default_measure(ds: Any) -> str:
    ms = measures(ds)
    if not ms:
        raise ValueError("the cube has no per-step measure to plot")
    return "entropy" if "entropy" in ms else ms[0]


FIGURES: dict[str, Callable[[Any], Any]] = {
    "spectrum": lambda ds: spectrum_plot(ds),
    "measure": lambda ds: measure_plot(ds, _default_measure(ds)),
    "scaling": lambda ds: scaling_plot(ds, _default_measure(ds)),
    "heatmap": lambda ds: heatmap_plot(ds, _default_measure(ds)),
}
"""Named figures of a cube, for ``ntkbench export CUBE --figure NAME``."""
