"""The pieces paper figures are made of: series over seeds with ± bands, panels and their
grid (built from figure data), step markers, the header, and category heat maps with
their colour mappers and cells."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ntkbench._types import Columns, LegendSide, SeedMode, Spread
from ntkbench.plots._figure_data import FigureData, check_figure_data
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
