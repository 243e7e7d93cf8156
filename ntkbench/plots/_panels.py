"""The pieces paper figures are made of: series over seeds with ± bands, trajectories in
the plane of two measures, rows of such panels comparing nets on a train and a test probe
(:func:`probe_row`, :func:`phase_row`), panels and their grid (built from figure data), step markers,
the header, and heat maps (over two categorical axes, or a numeric axis against the
recorded steps) with their colour mappers and cells."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ntkbench._types import Columns, LegendSide, SeedMode, Spread
from ntkbench.plots._figure_data import FigureData, check_figure_data, set_panel
from ntkbench.plots._layout import legend_beside, place_legend
from ntkbench.plots._select import finite_mask
from ntkbench.plots._style import (
    FONT,
    _dashed_span,
    _hover,
    legend_style,
    lighten,
    new_figure,
    si_formatter,
    si_text,
    style,
)


def seed_mode(seed: Any, ds: Any) -> SeedMode | int:
    """Check a seed selection against a cube: ``"mean"`` (mean ± std), ``"all"`` (every
    seed) or one of the cube's seeds (returned as an int); ``ValueError`` naming ``seed``
    otherwise."""
    if seed in ("mean", "all"):
        return seed
    if "seed" in ds.dims and seed not in ds["seed"].values.tolist():
        raise ValueError(f"seed must be 'mean', 'all' or one of {ds['seed'].values.tolist()}, got {seed!r}")
    return int(seed)


def seed_traces(da: Any, seed: SeedMode | int, *, spread: Spread = "std") -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The lines one DataArray over (``seed``, x) draws for a :func:`seed_mode`:
    ``[(values (X,), spread (X,) or None), ...]`` -- one (mean, spread) for ``"mean"``, one
    per seed for ``"all"``, one for a single seed; a cube without ``seed`` gives one line.
    ``spread``: ``"std"`` (standard deviation over seeds, ddof 0) or ``"se"`` (standard
    error of the mean: the sample standard deviation, ddof 1, / sqrt(number of finite
    seeds)). NaN seeds are left out of the mean."""
    if spread not in ("std", "se"):
        raise ValueError(f"spread must be 'std' or 'se', got {spread!r}")
    if "seed" not in da.dims:
        return [(np.asarray(da.values, float), None)]
    if seed == "mean":
        if da.sizes["seed"] <= 1:
            return [(np.asarray(da.mean("seed").values, float), None)]
        if spread == "se":  # the sample standard deviation over the seeds, / sqrt(n)
            n = np.maximum(np.asarray(da.notnull().sum("seed").values, float), 1.0)
            std = np.asarray(da.std("seed", ddof=1).values, float) / np.sqrt(n)
        else:
            std = np.asarray(da.std("seed").values, float)
        return [(np.asarray(da.mean("seed").values, float), std)]
    if seed == "all":
        return [(np.asarray(da.sel(seed=s).values, float), None) for s in da["seed"].values]
    return [(np.asarray(da.sel(seed=seed).values, float), None)]


def empty_lines() -> Columns:
    """Columns of a multi-line source: ``xs``, ``ys``, ``color``, ``label``, ``width``, ``alpha``."""
    return {"xs": [], "ys": [], "color": [], "label": [], "width": [], "alpha": []}


def empty_bands() -> Columns:
    """Columns of a band (patches) source: ``xs``, ``ys``, ``color``."""
    return {"xs": [], "ys": [], "color": []}


def _append_line(lines: Columns, x: np.ndarray, y: np.ndarray, color: str, label: str, light: bool) -> None:
    """Append one line to :func:`empty_lines` columns: thinner when ``light``."""
    lines["xs"].append(x.tolist())
    lines["ys"].append(y.tolist())
    lines["color"].append(color)
    lines["label"].append(label)
    lines["width"].append(1.6 if light else 2.4)
    lines["alpha"].append(0.95)


def add_series(
    lines: Columns,
    bands: Columns,
    x: np.ndarray,
    traces: Sequence[tuple[np.ndarray, np.ndarray | None]],
    color: str,
    label: str,
    *,
    light: bool = False,
    log_y: bool = False,
    log_x: bool = True,
) -> None:
    """Append lines (and ± std bands where a trace has a std) to ``lines``/``bands``.

    ``traces`` come from :func:`seed_traces`; ``light`` draws in :func:`lighten`\\ ed colour
    and thinner (e.g. the test probe beside the dark train probe). Points that a log axis
    cannot show, and NaN/Inf, are left out; a band's lower edge stays positive on a log
    axis."""
    col = lighten(color) if light else color
    for y, std in traces:
        ok = finite_mask(x, y, log_x, log_y)
        if not ok.any():
            continue
        _append_line(lines, x[ok], y[ok], col, label, light)
        if std is not None and np.any(std[ok] > 0):
            lo, hi = y[ok] - std[ok], y[ok] + std[ok]
            if log_y:
                lo = np.maximum(lo, y[ok] * 1e-3)
            bands["xs"].append(x[ok].tolist() + x[ok][::-1].tolist())
            bands["ys"].append(hi.tolist() + lo[::-1].tolist())
            bands["color"].append(col)


def empty_trajectories() -> dict[str, Columns]:
    """The columns of a panel of trajectories (:func:`add_trajectories`), by the suffix of
    their source: ``"lines"`` (:func:`empty_lines`), ``"bands"`` (:func:`empty_bands`, left
    empty: a trajectory has no band, but :func:`lines_and_bands` draws the panel as any
    other), ``"ends"`` (``x``, ``y``, ``color``, ``marker``: ``"circle"`` at the start,
    ``"square"`` at the end, ``label``) and ``"marker"`` (``x``, ``y``, ``color``)."""
    return {
        "lines": empty_lines(),
        "bands": empty_bands(),
        "ends": {"x": [], "y": [], "color": [], "marker": [], "label": []},
        "marker": {"x": [], "y": [], "color": []},
    }


def add_trajectories(
    columns: dict[str, Columns],
    x_traces: Sequence[tuple[np.ndarray, np.ndarray | None]],
    y_traces: Sequence[tuple[np.ndarray, np.ndarray | None]],
    steps: Sequence[Any],
    color: str,
    label: str,
    *,
    at: int | None = None,
    light: bool = False,
    log_x: bool = True,
    log_y: bool = False,
) -> None:
    """Append the trajectories of a run in the plane of two measures (a phase plot) to
    ``columns`` (:func:`empty_trajectories`).

    ``x_traces`` / ``y_traces``: :func:`seed_traces` of the two measures at the same seed
    mode (they pair up; spreads are not drawn), each trace (T,) over the recorded ``steps``
    (T,). Per pair: a line through the points both axes can show (:func:`finite_mask`) to
    ``"lines"`` (``light``: :func:`lighten`\\ ed and thinner, as :func:`add_series`), its
    first and last point to ``"ends"`` (labelled ``"{label} step {step}"``) and the point at
    step index ``at`` (None: none), if shown, to ``"marker"``."""
    lines, ends, marker = columns["lines"], columns["ends"], columns["marker"]
    col = lighten(color) if light else color
    for (xl, _), (yl, _) in zip(x_traces, y_traces, strict=True):
        ok = finite_mask(xl, yl, log_x, log_y)
        if not ok.any():
            continue
        _append_line(lines, xl[ok], yl[ok], col, label, light)
        idx = np.flatnonzero(ok)
        for i, mk in ((idx[0], "circle"), (idx[-1], "square")):
            ends["x"].append(float(xl[i]))
            ends["y"].append(float(yl[i]))
            ends["color"].append(col)
            ends["marker"].append(mk)
            ends["label"].append(f"{label} step {int(steps[i])}")
        if at is not None and ok[at]:
            marker["x"].append(float(xl[at]))
            marker["y"].append(float(yl[at]))
            marker["color"].append(col)


def probe_row(
    data: FigureData,
    prefix: str,
    title: str,
    x: Any,
    nets: Sequence[tuple[Any, str, str]],
    columns: Sequence[tuple[str, str, str, str, bool]],
    *,
    test: bool,
    mode: Any,
    x_label: str = "step + 1",
) -> list[str]:
    """One row of line panels of figure data ``data`` against ``x`` (X,), on a log x axis:
    per column ``(col, train variable, test variable, y label, log_y)`` of ``columns`` the
    panel ``"{prefix}-{col}"`` (:func:`put_lines`, :func:`ntkbench.set_panel`) with a
    line (and band) per net of ``nets`` -- (cube selection, colour, label) -- for the train
    probe (dark, ``"{label} train"``) and, with ``test``, the test probe (light, ``"{label}
    test"``) at seed mode ``mode`` (:func:`seed_mode`); ``title`` on the first panel. Returns
    the panel names."""
    keys = []
    for j, (col, v_train, v_test, ylab, log_y) in enumerate(columns):
        key = f"{prefix}-{col}"
        lines, bands = empty_lines(), empty_bands()
        for sel, color, label in nets:
            for var, probe in ((v_train, "train"), (v_test, "test"))[: 2 if test else 1]:
                traces = seed_traces(sel[var], mode)
                add_series(lines, bands, x, traces, color, f"{label} {probe}", light=probe == "test", log_y=log_y)
        data["sources"][f"{key}-lines"], data["sources"][f"{key}-bands"] = lines, bands
        set_panel(data, key, title if j == 0 else "", x_label, ylab, log_x=True, log_y=log_y)
        keys.append(key)
    return keys


def phase_row(
    data: FigureData,
    prefix: str,
    title: str,
    nets: Sequence[tuple[Any, str, str]],
    columns: Sequence[tuple[str, str, str, str, bool]],
    *,
    x_vars: tuple[str, str],
    x_label: str,
    steps: Sequence[Any],
    at: int | None,
    test: bool,
    mode: Any,
) -> list[str]:
    """One row of phase panels (the :func:`probe_row` of trajectories): per column ``(col,
    train variable, test variable, y label, log_y)`` of ``columns`` the panel
    ``"{prefix}-{col}"`` with the trajectories (:func:`add_trajectories`; sources
    ``"{key}-lines"``, ``"-bands"`` (empty), ``"-ends"``, ``"-marker"``) of every net of
    ``nets`` -- (cube selection, colour, label) -- in the plane of ``x_vars`` (train, test
    variable; a log x axis) and the column's variable, for the train probe (dark) and, with
    ``test``, the test probe (light), at seed mode ``mode``; ``at``: the step index
    marked. ``title`` on the first panel. Returns the panel names."""
    keys = []
    for j, (col, v_train, v_test, ylab, log_y) in enumerate(columns):
        key = f"{prefix}-{col}"
        cols = empty_trajectories()
        for sel, color, label in nets:
            probes = [("train", x_vars[0], v_train, False)] + ([("test", x_vars[1], v_test, True)] if test else [])
            for probe, xv, yv, light in probes:
                x_traces, y_traces = seed_traces(sel[xv], mode), seed_traces(sel[yv], mode)
                add_trajectories(
                    cols, x_traces, y_traces, steps, color, f"{label} {probe}", at=at, light=light, log_y=log_y
                )
        data["sources"].update({f"{key}-{part}": c for part, c in cols.items()})
        set_panel(data, key, title if j == 0 else "", x_label, ylab, log_x=True, log_y=log_y)
        keys.append(key)
    return keys


def trajectory_points(fig: Any, data: FigureData, key: str) -> None:
    """Draw the points of panel ``key``'s trajectories (:func:`add_trajectories`) on
    ``fig``: the sources ``"{key}-ends"`` (open circles at the start, squares at the end,
    outlined in the line's colour) and ``"{key}-marker"`` (a filled dot at the chosen step)."""
    from bokeh.models import ColumnDataSource

    ends = ColumnDataSource(dict(data["sources"][f"{key}-ends"]), name=f"{key}-ends")
    fig.scatter("x", "y", source=ends, marker="marker", size=7, fill_color="white", line_color="color", line_width=1.5)
    mk = ColumnDataSource(dict(data["sources"][f"{key}-marker"]), name=f"{key}-marker")
    fig.scatter("x", "y", source=mk, size=9, color="color", line_color="black")


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least squares ``y = a + b x``; returns ``(a, b, r2)``.

    >>> [round(v, 9) for v in linear_fit(np.array([0.0, 1, 2]), np.array([1.0, 3, 5]))]
    [1.0, 2.0, 1.0]
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    b, a = np.polyfit(x, y, 1)
    pred = a + b * x
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else 1.0
    return float(a), float(b), r2


def add_power_fit(lines: Columns, x: np.ndarray, fit: tuple[float, float, float], color: str, label: str) -> None:
    """Append the line ``a·x^b`` of the power-law fit ``fit = (a, b, r2)`` at ``x`` (X,) to
    the columns ``xs``, ``ys``, ``color``, ``label`` of a multi-line source (e.g. fits drawn
    dashed over the data).

    >>> fits = {"xs": [], "ys": [], "color": [], "label": []}
    >>> add_power_fit(fits, np.array([1.0, 4.0]), (2.0, 0.5, 1.0), "#111111", "fit")
    >>> fits["ys"]
    [[2.0, 4.0]]
    """
    a, b, _ = fit
    lines["xs"].append(x.tolist())
    lines["ys"].append((a * x**b).tolist())
    lines["color"].append(color)
    lines["label"].append(label)


def panel(
    name: str,
    title: str,
    x_label: str,
    y_label: str,
    log_x: bool,
    log_y: bool,
    width: int,
    height: int,
    *,
    si_y: bool = False,
) -> Any:
    """One plot of a paper figure's grid, named ``name`` (so :func:`apply` finds it), with
    log ticks on log axes and, with ``si_y``, SI labels (``20k``) on the y axis."""
    fig = new_figure(title, x_label, y_label, log_x, log_y, width=width, height=height, name=name)
    if si_y:
        fig.yaxis[0].formatter = si_formatter()
    return fig


def panel_style(fig: Any, legend: bool, location: str = "bottom_left", *, beside: LegendSide | None = None) -> None:
    """:func:`style` at the smaller sizes of a multi-panel figure; the legend (if any)
    shown when ``legend``, hidden otherwise: in the corner where the data are not
    (:func:`place_legend`; ``location`` when the plot has no data yet), else beside the
    plot; ``beside="right"`` or ``"below"`` puts it there in any case
    (:func:`legend_beside`)."""
    style(fig)
    fig.title.text_font_size = "11pt"
    for ax in (*fig.xaxis, *fig.yaxis):
        ax.axis_label_text_font_size = "10.5pt"
        ax.major_label_text_font_size = "9.5pt"
    if legend and fig.legend:
        legend_style(fig, location)
        fig.legend[0].label_text_font_size = "8.5pt"
        if beside is not None:
            legend_beside(fig, beside)
        else:
            place_legend(fig)
    elif fig.legend:
        fig.legend[0].visible = False


def lines_and_bands(fig: Any, data: FigureData, key: str, legend: bool, *, band_alpha: float = 0.2) -> Any:
    """Draw the sources ``"{key}-bands"`` (patches) and ``"{key}-lines"`` (a multi-line
    coloured, sized and labelled by its columns) of figure data ``data`` on ``fig``;
    returns the line renderer. A missing band source is drawn empty."""
    from bokeh.models import ColumnDataSource

    sources = data["sources"]
    bands = ColumnDataSource(dict(sources.get(f"{key}-bands", empty_bands())), name=f"{key}-bands")
    lines = ColumnDataSource(dict(sources[f"{key}-lines"]), name=f"{key}-lines")
    fig.patches("xs", "ys", source=bands, fill_color="color", fill_alpha=band_alpha, line_color=None)
    kw = {"legend_field": "label"} if legend else {}
    return fig.multi_line("xs", "ys", source=lines, line_color="color", line_width="width", line_alpha="alpha", **kw)


def step_marker(fig: Any, name: str, location: float | None) -> Any:
    """A dashed vertical line named ``name`` at x = ``location`` (hidden when None)."""
    return _dashed_span(fig, name, location, color="#888888", width=1.2)


def header(text: str, width: int) -> Any:
    """The header block above a paper figure: a ``Div`` named ``"header"``."""
    from bokeh.models import Div

    return Div(text=text, styles={"font-family": FONT, "font-size": "12pt"}, width=width, name="header")


def panel_grid(
    data: FigureData,
    draw: Callable[[Any, str], None],
    *,
    panel_size: tuple[int, int],
    name: str,
    si_y: Callable[[str], bool] | None = None,
) -> Any:
    """A header over a grid of panels, all from figure data: ``data["panels"]`` gives the
    grid, ``titles`` / ``x_labels`` / ``y_labels`` / ``scales`` each panel's texts and
    axes; ``draw(fig, panel)`` adds the glyphs (and may widen the panel). Returns a
    ``column(header, gridplot)`` named ``name``. A key outside :class:`FigureData` is a
    ``ValueError`` (:func:`check_figure_data`)."""
    from bokeh.layouts import column, gridplot

    check_figure_data(data)

    w, h = panel_size
    rows = []
    for row in data["panels"]:
        figs = []
        for key in row:
            log_x, log_y = data["scales"][key]
            ylab = data["y_labels"][key]
            fig = panel(
                key,
                data["titles"][key],
                data["x_labels"][key],
                ylab,
                log_x,
                log_y,
                w,
                h,
                si_y=bool(si_y(key)) if si_y else False,
            )
            draw(fig, key)
            figs.append(fig)
        rows.append(figs)
    head = header(data["header"], sum(f.width for f in rows[0]))
    return column(head, gridplot(rows, toolbar_location="right", merge_tools=True), name=name)


def si_trace_axes(data: FigureData) -> Callable[[str], bool]:
    """For :func:`panel_grid`'s ``si_y``: SI tick labels (``20k``) on log y axes of traces
    (labels with ``Tr``)."""
    return lambda key: bool(data["scales"][key][1]) and "Tr" in data["y_labels"][key]


def line_grid(data: FigureData, *, panel_size: tuple[int, int], name: str, legend_location: str = "bottom_left") -> Any:
    """A :func:`panel_grid` of lines with ± bands: each panel draws its ``"{key}-lines"`` /
    ``"{key}-bands"`` sources, a dashed marker where ``data["spans"]`` has
    ``"{key}-marker"``, and a legend when it is in ``data["legend"]``, at
    ``data["legend_location"]`` if the figure data says where, else ``legend_location``."""
    spans = data.get("spans", {})
    legend_location = data.get("legend_location", legend_location)

    def draw(fig: Any, key: str) -> None:
        legend = key in data["legend"]
        lines_and_bands(fig, data, key, legend)
        if f"{key}-marker" in spans:
            step_marker(fig, f"{key}-marker", spans[f"{key}-marker"])
        panel_style(fig, legend=legend, location=legend_location)

    return panel_grid(data, draw, panel_size=panel_size, name=name, si_y=si_trace_axes(data))


def color_mapper(
    low: float, high: float, *, log: bool = False, diverging: bool = False, name: str | None = None
) -> Any:
    """A colour mapper: Viridis (log scale with ``log``), or RdBu centred on the range
    with ``diverging`` (blue low, red high); NaN cells grey."""
    import bokeh.palettes as bp
    from bokeh.models import LinearColorMapper, LogColorMapper

    pal = bp.interp_palette(bp.RdBu11, 256) if diverging else bp.Viridis256
    return (LogColorMapper if log else LinearColorMapper)(
        palette=pal, low=low, high=high, nan_color="#dddddd", name=name
    )


def text_colors(
    values: Sequence[float], low: float, high: float, *, log: bool = False, diverging: bool = False
) -> list[str]:
    """Text colour per heat-map cell: white on dark cells, dark on light ones (for the
    palettes of :func:`color_mapper`)."""
    out = []
    for v in values:
        if not np.isfinite(v):
            out.append("#222222")
            continue
        if diverging:
            dark = abs(v) > 0.55 * max(abs(low), abs(high))
        else:
            a, b, x = (np.log(low), np.log(high), np.log(max(v, 1e-300))) if log else (low, high, v)
            dark = (x - a) / ((b - a) or 1.0) < 0.45
        out.append("white" if dark else "#222222")
    return out


def color_range(values: Any, *, log: bool = False, symmetric: bool = False) -> tuple[float, float]:
    """A colour mapper's ``(low, high)`` for ``values``: over the finite values (positive
    ones with ``log``), symmetric around 0 with ``symmetric`` (a diverging palette whose
    sign is the signal), widened when all values are equal; ``(0, 1)`` without values.

    >>> color_range([-0.2, 0.5], symmetric=True), color_range([3.0, 3.0])
    ((-0.5, 0.5), (3.0, 3.3))
    """
    vals = np.ravel(np.asarray(values, dtype=float))
    vals = vals[np.isfinite(vals)]
    if log:
        vals = vals[vals > 0]
    if not vals.size:
        return (0.0, 1.0)
    lo, hi = float(vals.min()), float(vals.max())
    if symmetric:
        m = max(abs(lo), abs(hi), 1e-6)
        return (-m, m)
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    return (lo, hi)


def heatmap_cells(
    values: Any,
    x_values: Sequence[Any],
    y_values: Sequence[Any],
    *,
    x_name: str = "x",
    y_name: str = "y",
    low: float,
    high: float,
    log: bool = False,
    diverging: bool = False,
    fmt: str = "{:.2f}",
) -> Columns:
    """Cells of :func:`category_heatmap` from ``values`` (len(y_values), len(x_values)),
    row by row: ``{x_name}_label`` / ``{y_name}_label`` (the factors), ``x_name`` /
    ``y_name`` (the values), ``value`` (NaN where not finite), ``text`` (:func:`si_text`
    with ``fmt``) and ``text_color`` (:func:`text_colors` for ``low``..``high``)."""
    vals = np.asarray(values, dtype=float)
    cells: Columns = {k: [] for k in (f"{x_name}_label", f"{y_name}_label", x_name, y_name, "value", "text")}
    for i, yv in enumerate(y_values):
        for j, xv in enumerate(x_values):
            v = float(vals[i, j])
            cells[f"{x_name}_label"].append(str(xv))
            cells[f"{y_name}_label"].append(str(yv))
            cells[x_name].append(xv)
            cells[y_name].append(yv)
            cells["value"].append(v if np.isfinite(v) else float("nan"))
            cells["text"].append(si_text(v, fmt))
    cells["text_color"] = text_colors(cells["value"], low, high, log=log, diverging=diverging)
    return cells


def category_heatmap(
    name: str,
    title: str,
    cells: Columns,
    mapper: Any,
    *,
    x_factors: Sequence[str],
    y_factors: Sequence[str],
    x_label: str,
    y_label: str,
    x_field: str = "x_label",
    y_field: str = "y_label",
    tooltips: Sequence[tuple[str, str]] | None = None,
    cell: int = 62,
    colorbar: bool = False,
    si_colorbar: bool = False,
) -> Any:
    """A heat map over two categorical axes with the value written in each cell.

    ``cells`` has the factor columns ``x_field`` / ``y_field`` (strings among
    ``x_factors`` / ``y_factors``), ``value``, ``text`` and ``text_color``
    (:func:`text_colors`), and any columns ``tooltips`` show (default: the value); the
    source is named ``"{name}-cells"``, the plot ``name``, and each cell is ``cell`` pixels.
    ``colorbar`` adds the mapper's colour bar on the right (SI labels with
    ``si_colorbar``)."""
    from bokeh.models import ColorBar, ColumnDataSource, FactorRange
    from bokeh.plotting import figure

    fig: Any = figure(
        title=title,
        x_range=FactorRange(factors=list(x_factors)),
        y_range=FactorRange(factors=list(y_factors)),
        x_axis_label=x_label,
        y_axis_label=y_label,
        width=cell * len(x_factors) + 110 + (90 if colorbar else 0),
        height=cell * len(y_factors) + 90,
        tools="hover,save",
        name=name,
    )
    src = ColumnDataSource(dict(cells), name=f"{name}-cells")
    fig.rect(x_field, y_field, 1, 1, source=src, fill_color={"field": "value", "transform": mapper}, line_color="white")
    fig.text(
        x_field,
        y_field,
        text="text",
        source=src,
        text_align="center",
        text_baseline="middle",
        text_font_size="8.5pt",
        text_color="text_color",
    )
    hover = _hover(fig)
    hover.tooltips = list(tooltips) if tooltips is not None else [("value", "@value{%0.4g}")]
    hover.formatters = {"@value": "printf"}
    if colorbar:
        bar = ColorBar(color_mapper=mapper, width=12, major_label_text_font_size="9pt")
        if si_colorbar:
            bar.formatter = si_formatter()
        fig.add_layout(bar, "right")
    style(fig)
    fig.title.text_font_size = "10.5pt"
    fig.grid.grid_line_color = None
    fig.axis.axis_line_color = None
    fig.axis.major_tick_line_color = None
    return fig


def heatmap_rows(
    data: FigureData,
    mappers: Sequence[Any],
    *,
    name: str,
    tooltips: Sequence[Sequence[tuple[str, str]] | None] = (),
    si_colorbar: Sequence[bool] = (),
    **kw: Any,
) -> Any:
    """A header over rows of :func:`category_heatmap`\\ s, all from figure data: row ``i``
    draws the panels ``data["panels"][i]`` (each its source ``"{key}-cells"`` and title
    ``data["titles"][key]``, over the factors ``data["factors"]["x"]`` / ``["y"]``) coloured
    by ``mappers[i]`` (:func:`color_mapper`), with the mapper's colour bar beside the row's
    last panel (SI labels where ``si_colorbar[i]``) and the hover ``tooltips[i]`` (default:
    the value); ``kw`` (``x_label``, ``y_label``, ``x_field``, ``y_field``, ``cell``) go to
    every heat map. Returns ``column(header, *rows)`` named ``name``."""
    from bokeh.layouts import column, row

    rows = []
    for i, (keys, mapper) in enumerate(zip(data["panels"], mappers, strict=True)):
        figs = [
            category_heatmap(
                key,
                data["titles"][key],
                data["sources"][f"{key}-cells"],
                mapper,
                x_factors=data["factors"]["x"],
                y_factors=data["factors"]["y"],
                tooltips=tooltips[i] if i < len(tooltips) else None,
                colorbar=j == len(keys) - 1,
                si_colorbar=bool(si_colorbar[i]) if i < len(si_colorbar) else False,
                **kw,
            )
            for j, key in enumerate(keys)
        ]
        rows.append(row(*figs))
    head = header(data["header"], sum(f.width for f in rows[0].children) if rows else 600)
    return column(head, *rows, name=name)


def step_heatmap_cells(values: Any, steps: Sequence[Any], *, start: int = 1) -> Columns:
    """Cells of :func:`step_heatmap` from ``values`` (len(steps), K), row by row: ``x`` (the
    numeric axis, ``start`` … ``start`` + K − 1), ``step``, ``step_label`` (the factor: the
    step as a string) and ``value`` (as given: NaN cells stay NaN, drawn grey).

    >>> step_heatmap_cells([[0.5, 0.25]], [10])
    {'x': [1, 2], 'step': [10, 10], 'step_label': ['10', '10'], 'value': [0.5, 0.25]}
    """
    vals = np.asarray(values, dtype=float)
    cells: Columns = {"x": [], "step": [], "step_label": [], "value": []}
    for i, s in enumerate(steps):
        for k in range(vals.shape[1]):
            cells["x"].append(k + start)
            cells["step"].append(s)
            cells["step_label"].append(str(s))
            cells["value"].append(float(vals[i, k]))
    return cells


def step_heatmap(
    name: str,
    title: str,
    cells: Columns,
    mapper: Any,
    *,
    n_x: int,
    steps: Sequence[str],
    x_label: str,
    y_label: str = "step",
    tooltips: Sequence[tuple[str, str]] = (("x", "@x"), ("step", "@step_label"), ("value", "@value{%0.3g}")),
    colorbar_title: str | None = None,
    width: int = 560,
    height: int = 380,
) -> tuple[Any, Any]:
    """A heat map of a numeric axis (x = 1 … ``n_x``, one cell each) against the recorded
    steps (y: one row per factor of ``steps``, evenly spaced however the steps are).

    ``cells`` are :func:`step_heatmap_cells` (source ``"{name}-cells"``), coloured by
    ``mapper`` (:func:`color_mapper`) with its colour bar on the right (``colorbar_title``);
    a hover on the cells shows ``tooltips`` (``@value`` printf-formatted). Returns ``(plot,
    cell renderer)``; draw more over it with y = ``"step_label"``."""
    from bokeh.models import ColorBar, ColumnDataSource, FactorRange, HoverTool, Range1d
    from bokeh.plotting import figure

    fig: Any = figure(
        title=title,
        x_range=Range1d(start=0.5, end=n_x + 0.5),
        y_range=FactorRange(factors=list(steps)),
        x_axis_label=x_label,
        y_axis_label=y_label,
        width=width,
        height=height,
        tools="save,pan,wheel_zoom,reset",
        name=name,
    )
    src = ColumnDataSource(dict(cells), name=f"{name}-cells")
    heat = fig.rect(
        "x", "step_label", 1, 1, source=src, fill_color={"field": "value", "transform": mapper}, line_color=None
    )
    fig.add_tools(HoverTool(renderers=[heat], tooltips=list(tooltips), formatters={"@value": "printf"}))
    fig.add_layout(ColorBar(color_mapper=mapper, width=12, title=colorbar_title), "right")
    style(fig)
    fig.title.text_font_size = "11pt"
    fig.grid.grid_line_color = None
    return fig, heat
