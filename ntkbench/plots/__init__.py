"""Bokeh figure builders that take result cubes.

Every builder is split in two: a pure ``*_data`` function that turns a cube and a selection
into the columns of the figure's named ``ColumnDataSource``\\ s, and the figure builder that
creates those sources and the glyphs once. Widgets redraw a figure in place with
:func:`update`, which assigns new columns to the existing sources (no re-render).

Paper figures (``ntkbench.papers``) are built from the same pieces, public here: series
with mean ± std bands over seeds (:func:`seed_traces`, :func:`add_series`), panels and
their grid (:func:`panel`, :func:`panel_grid`), formatters (:func:`si_formatter`, log
ticks), category heat maps (:func:`category_heatmap`), step markers and header blocks; a
*figure-data* dict describes everything about such a figure that depends on its settings,
and :func:`apply` redraws a built figure from a new one (see the "paper figures" section).

Axis labels and units come from each variable's ``long_name`` and ``units`` attributes;
lines over widths use a perceptual palette (Viridis), lines over steps Plasma; hover tools
show the exact values.

Example
-------
>>> from ntkbench.testing import synthetic_cube
>>> from ntkbench import plots
>>> ds = synthetic_cube(widths=(16, 64), seeds=(0, 1), steps=(0, 10, 100), n_eigen=8)
>>> fig = plots.spectrum_plot(ds, step=100)
>>> len(fig.select_one({"name": "lines"}).data["ys"])  # one line per width
2
>>> plots.update(fig, plots.spectrum_data(ds, step=100, width=[64]))
>>> fig.select_one({"name": "lines"}).data["label"]
['width 64']
"""

from __future__ import annotations

import atexit
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "spectrum_data",
    "spectrum_plot",
    "measure_data",
    "measure_plot",
    "scaling_data",
    "scaling_plot",
    "heatmap_data",
    "heatmap_plot",
    "kernel_image",
    "update",
    "set_log",
    "label",
    "measures",
    "power_law_fit",
    "FIGURES",
    "export",
    "EXPORT_FORMATS",
    "vector_svg",
    "svg_to_pdf",
    "webdriver",
    # building blocks (also for paper figures)
    "check_cube",
    "finite_mask",
    "palette",
    "new_figure",
    "style",
    "legend_style",
    "place_legend",
    "legend_beside",
    "fit_width",
    "FigureData",
    "lighten",
    "si_formatter",
    "si_text",
    "seed_mode",
    "seed_traces",
    "empty_lines",
    "empty_bands",
    "add_series",
    "linear_fit",
    "panel",
    "panel_style",
    "lines_and_bands",
    "step_marker",
    "header",
    "panel_grid",
    "figure_data",
    "set_panel",
    "si_trace_axes",
    "line_grid",
    "color_mapper",
    "text_colors",
    "category_heatmap",
    "color_range",
    "heatmap_cells",
    "layout_key",
    "figure_index",
    "apply",
]

Columns = dict[str, Any]
SeedSel = Literal["mean"] | int

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FONT = "Helvetica, Arial, sans-serif"


# --------------------------------------------------------------------------- helpers


def label(ds: Any, name: str) -> str:
    """Axis label ``"long_name [units]"`` of a variable or coordinate (units 1 are omitted)."""
    if name not in ds.variables:
        return name
    attrs = ds[name].attrs
    text = str(attrs.get("long_name", name))
    units = str(attrs.get("units", "")).strip()
    if units and units not in ("1", "-", "dimensionless"):
        text += f" [{units}]"
    return text


def measures(ds: Any) -> list[str]:
    """Names of the per-step scalar measures in a cube (variables with a ``step`` dim and
    without ``eigen_index``), in cube order."""
    return [
        str(k)
        for k, v in ds.data_vars.items()
        if "step" in v.dims and "eigen_index" not in v.dims and np.issubdtype(v.dtype, np.number)
    ]


def check_cube(ds: Any, var: str | None = None) -> None:
    """``TypeError`` unless ``ds`` is an ``xarray.Dataset``; ``ValueError`` naming the
    variables it has unless ``var`` (if given) is one of them."""
    import xarray as xr

    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"ds must be an xarray.Dataset (a result cube), got {type(ds).__name__}")
    if var is not None and var not in ds.data_vars:
        raise ValueError(f"variable {var!r} is not in the cube; it has {sorted(map(str, ds.data_vars))}")


def palette(n: int, name: str = "Viridis256") -> list[str]:
    """``n`` colours sampled evenly from a perceptual 256-colour palette, avoiding the
    palest end (unreadable on white)."""
    import bokeh.palettes as bp

    pal = getattr(bp, name)
    if n <= 0:
        return []
    if n == 1:
        return [pal[0]]
    idx = np.linspace(0, 0.85 * (len(pal) - 1), n).round().astype(int)
    return [pal[i] for i in idx]


def _colors_for(values: Sequence, all_values: Sequence, name: str) -> list[str]:
    # colours are tied to the position in the full coordinate, so a width keeps its colour
    # when the selection changes
    pal = palette(len(all_values), name)
    lookup = dict(zip(list(all_values), pal, strict=True))
    return [lookup[v] for v in values]


def _select_seed(da: Any, seed: SeedSel) -> tuple[Any, Any]:
    """Reduce the ``seed`` dim: ``"mean"`` → (mean, std); an int → (that seed, None)."""
    if "seed" not in da.dims:
        return da, None
    if isinstance(seed, str):
        if seed != "mean":
            raise ValueError(f"seed must be 'mean' or a seed value, got {seed!r}")
        std = da.std("seed") if da.sizes["seed"] > 1 else None
        return da.mean("seed"), std
    if seed not in da["seed"].values:
        raise ValueError(f"seed {seed!r} is not in the cube; seeds are {da['seed'].values.tolist()}")
    return da.sel(seed=seed), None


def _drop_extra(da: Any, keep: Sequence[str]) -> Any:
    """Take the first value along any swept dim not in ``keep`` (depth, lr, n_train, …)."""
    extra = [d for d in da.dims if d not in keep]
    return da.isel({d: 0 for d in extra}) if extra else da


def _resolve_step(ds: Any, step: int | None) -> int:
    """A step value of the cube: ``None`` or a negative int count from the end (-1 = last),
    otherwise the nearest recorded step."""
    steps = ds["step"].values
    if step is None:
        return int(steps[-1])
    if not isinstance(step, (int, np.integer)):
        raise TypeError(f"step must be an int step value (or negative position), got {step!r}")
    if step < 0:
        if -step > len(steps):
            raise ValueError(f"step {step} out of range for {len(steps)} recorded steps")
        return int(steps[step])
    return int(steps[np.abs(steps - step).argmin()])


def _resolve_widths(ds: Any, widths: int | Sequence[int] | None) -> list:
    if "width" not in ds.dims:
        return [None]
    all_w = ds["width"].values.tolist()
    if widths is None:
        return all_w
    if isinstance(widths, (int, np.integer)):
        widths = [int(widths)]
    bad = [w for w in widths if w not in all_w]
    if bad:
        raise ValueError(f"widths {bad} are not in the cube; widths are {all_w}")
    return [w for w in all_w if w in set(widths)]  # cube order


def finite_mask(x: np.ndarray, y: np.ndarray, log_x: bool, log_y: bool) -> np.ndarray:
    """Points that can be drawn: finite, and positive on a log axis."""
    ok = np.isfinite(x) & np.isfinite(y)
    if log_x:
        ok &= x > 0
    if log_y:
        ok &= y > 0
    return ok


def style(fig: Any) -> Any:
    """Publication style: readable upright fonts, light grid, no outline, auto-hidden toolbar."""
    fig.title.text_font = FONT
    fig.title.text_font_size = "13pt"
    fig.title.text_font_style = "normal"
    for ax in (*fig.xaxis, *fig.yaxis):
        ax.axis_label_text_font = FONT
        ax.axis_label_text_font_size = "12pt"
        ax.axis_label_text_font_style = "normal"
        ax.major_label_text_font = FONT
        ax.major_label_text_font_size = "10.5pt"
        ax.minor_tick_line_color = None
    fig.grid.grid_line_color = "#e5e5e5"
    fig.outline_line_color = None
    fig.toolbar.autohide = True
    fig.toolbar.logo = None
    fig.background_fill_color = "white"
    fig.border_fill_color = "white"
    fig.min_border_right = 20
    return fig


_TICKS_125 = [m * 10.0**e for e in range(-3, 7) for m in (1, 2, 5)]


def _hover(fig: Any) -> Any:
    """The figure's HoverTool (made by ``tools="hover,..."``)."""
    from bokeh.models import HoverTool

    hover = fig.select_one({"type": HoverTool})
    if not isinstance(hover, HoverTool):
        raise RuntimeError("figure has no HoverTool")
    return hover


def _fixed_ticks(axis: Any, ticks: Sequence[float]) -> None:
    """Ticks at given values, plain integer labels, no minor ticks (e.g. ranks, widths)."""
    from bokeh.models import FixedTicker, NumeralTickFormatter

    axis.ticker = FixedTicker(ticks=list(ticks), minor_ticks=[])
    axis.formatter = NumeralTickFormatter(format="0")


def legend_style(fig: Any, location: str = "top_right") -> None:
    """The legend of ``fig`` at ``location``, in the house font, click to hide a line."""
    if not fig.legend:
        return
    leg = fig.legend[0]
    leg.location = location
    leg.label_text_font = FONT
    leg.label_text_font_size = "10pt"
    leg.background_fill_alpha = 0.8
    leg.border_line_color = None
    leg.click_policy = "hide"
    leg.spacing = 0
    leg.padding = 6


CORNERS = ("top_right", "top_left", "bottom_left", "bottom_right")
AUTO_LEGEND = "ntkbench-auto-legend"  # tag of a legend that place_legend moves on every redraw


def _plotted_points(fig: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every finite (x, y) a figure's glyphs draw (line vertices, densified so a segment
    crossing a corner counts there; patch vertices; scatter points)."""
    from bokeh.models import GlyphRenderer

    xs_all: list[np.ndarray] = []
    ys_all: list[np.ndarray] = []
    for r in fig.renderers:
        if not isinstance(r, GlyphRenderer) or not r.visible:
            continue
        data = getattr(r.data_source, "data", {})
        if "xs" in data and "ys" in data:
            pairs = zip(data["xs"], data["ys"], strict=False)
        elif "x" in data and "y" in data:
            pairs = [(data["x"], data["y"])]
        else:
            continue
        for x, y in pairs:
            x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
            if x.size != y.size or x.size == 0:
                continue
            if x.size > 1:  # 8 points per segment
                t = np.linspace(0.0, 1.0, 8, endpoint=False)
                x = np.concatenate([(x[:-1, None] + t * np.diff(x)[:, None]).ravel(), x[-1:]])
                y = np.concatenate([(y[:-1, None] + t * np.diff(y)[:, None]).ravel(), y[-1:]])
            xs_all.append(x)
            ys_all.append(y)
    if not xs_all:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(xs_all), np.concatenate(ys_all)


def _axis_fraction(v: np.ndarray, log: bool) -> np.ndarray:
    """Positions along an auto-ranged axis as fractions 0 … 1 (log scale: of the log)."""
    v = np.log10(v) if log else v
    lo, hi = float(np.min(v)), float(np.max(v))
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    return (v - lo + pad) / (hi - lo + 2 * pad)


def _legend_labels(leg: Any) -> list[str]:
    """The texts a legend shows: its items' values, and for a ``legend_field`` item the
    distinct values of that column of its renderers' sources."""
    texts: list[str] = []
    for item in leg.items:
        label = item.label
        field = label.get("field") if isinstance(label, dict) else getattr(label, "field", None)
        if field:
            for r in item.renderers:
                for v in r.data_source.data.get(field, []):
                    if str(v) not in texts:
                        texts.append(str(v))
        else:
            value = label.get("value") if isinstance(label, dict) else getattr(label, "value", label)
            texts.append(str(value))
    return texts


def place_legend(fig: Any, labels: Sequence[str] | None = None, *, redraw: bool = False) -> str | None:
    """Put ``fig``'s legend in the corner of the plot where the data are not: the corner
    whose legend-sized box holds the fewest drawn points (lines, bands, markers). Returns
    that corner, or None when every corner has data and the legend was put beside the plot
    (``"right"``, widening the figure by the legend's width) instead. ``labels`` (the
    legend's texts) size the box; by default the legend's items are counted. The legend is
    tagged, so :func:`apply` moves it again when new data are drawn (``redraw=True``: the
    emptiest corner, and a legend beside the plot stays there, so the figure keeps its size)."""
    from bokeh.models import LogScale

    if not fig.legend:
        return None
    leg = fig.legend[0]
    if AUTO_LEGEND not in leg.tags:
        leg.tags = [*leg.tags, AUTO_LEGEND]
    if leg in fig.right or leg in fig.below:  # already beside the plot (a redraw keeps the size)
        return None
    x, y = _plotted_points(fig)
    log_x, log_y = isinstance(fig.x_scale, LogScale), isinstance(fig.y_scale, LogScale)
    ok = np.isfinite(x) & np.isfinite(y)
    ok &= (x > 0) if log_x else True
    ok &= (y > 0) if log_y else True
    x, y = x[ok], y[ok]
    if x.size == 0:  # nothing drawn (yet): the legend stays where it was put
        return str(leg.location)
    labels = [str(t) for t in (labels if labels is not None else _legend_labels(leg))] or [""]
    frame_w, frame_h = max((fig.width or 600) - 80, 100), max((fig.height or 400) - 80, 100)
    width, height = _legend_box(leg, labels)
    box_w, box_h = min(width / frame_w, 1.0), min(height / frame_h, 1.0)
    fx, fy = _axis_fraction(x, log_x), _axis_fraction(y, log_y)
    if getattr(fig.x_range, "flipped", False):
        fx = 1.0 - fx
    right, top = fx >= 1.0 - box_w, fy >= 1.0 - box_h
    left, bottom = fx <= box_w, fy <= box_h
    counts = {
        "top_right": int((top & right).sum()),
        "top_left": int((top & left).sum()),
        "bottom_left": int((bottom & left).sum()),
        "bottom_right": int((bottom & right).sum()),
    }
    best = min(CORNERS, key=lambda c: counts[c])
    if counts[best] > 0 and not redraw:  # every corner has data: beside the plot
        legend_beside(fig, "right", labels)
        return None
    leg.location = best  # a redraw picks the emptiest corner, free or not
    return best


def _legend_box(leg: Any, labels: Sequence[str]) -> tuple[int, int]:
    """(width, height) in pixels a vertical legend of ``labels`` takes, estimated from its
    font size (an average glyph is 0.62 em wide; a row 1.45 em high)."""
    font_px = float(str(leg.label_text_font_size).removesuffix("pt") or 10) * 96 / 72
    width = 40 + 0.62 * font_px * max((len(t) for t in labels), default=0)
    return int(width), int(14 + 1.45 * font_px * max(len(labels), 1))


def legend_beside(fig: Any, side: str = "right", labels: Sequence[str] | None = None) -> None:
    """Put ``fig``'s legend beside the plot (``"right"`` or ``"below"``), out of the data,
    and grow the figure by the legend's size so the plot keeps its frame and no label is
    cut. ``labels`` size the legend (default: what it shows)."""
    if side not in ("right", "below"):
        raise ValueError(f"side must be 'right' or 'below', got {side!r}")
    if not fig.legend:
        return
    leg = fig.legend[0]
    labels = [str(t) for t in (labels if labels is not None else _legend_labels(leg))]
    width, height = _legend_box(leg, labels)
    for where in ("center", "right", "below", "left", "above"):
        setattr(fig, where, [r for r in getattr(fig, where) if r is not leg])
    if side == "right":
        fig.width = int((fig.width or 600) + width)
    else:
        fig.height = int((fig.height or 400) + height)
    leg.location = "top_left"
    fig.add_layout(leg, side)


def new_figure(title: str, x_label: str, y_label: str, log_x: bool, log_y: bool, **kw: Any) -> Any:
    """A ``bokeh.plotting.figure`` (default 520 × 380, pan/zoom/reset/save tools) whose
    log axes tick and label themselves for the range shown (see ``_LOG_TICKS_JS``);
    ``kw`` go to ``figure`` (``width``, ``height``, ``tools``, ``name``, ...)."""
    from bokeh.plotting import figure

    fig = figure(
        title=title,
        x_axis_type="log" if log_x else "linear",
        y_axis_type="log" if log_y else "linear",
        x_axis_label=x_label,
        y_axis_label=y_label,
        width=kw.pop("width", 520),
        height=kw.pop("height", 380),
        tools=kw.pop("tools", "pan,wheel_zoom,box_zoom,reset,save"),
        **kw,
    )
    for flag, axes in ((log_x, fig.xaxis), (log_y, fig.yaxis)):
        if flag:  # ticks and labels that fit the range shown (see _LOG_TICKS_JS)
            for ax in axes:
                ax.ticker, ax.formatter = _log_ticker(), _log_formatter()
    return fig


# Ticks on log axes, chosen in the browser for the range shown (zoom included): 1-2-3-5-7
# per decade over ≤ 1.5 decades, 1-2-5 over ≤ 3, 1-3 over ≤ 5, powers of ten beyond (every
# k-th past 8 decades), linear 1-2-5 steps inside a sliver of a decade. Bokeh's LogTicker
# falls back to linear ticks below ~2 decades and then labels only part of the axis.
_LOG_TICKS_JS = """
const lo = Math.min(cb_data.start, cb_data.end), hi = Math.max(cb_data.start, cb_data.end);
if (!(lo > 0) || !(hi > lo)) return [];
const d = Math.log10(hi / lo);
const mant = d <= 1.5 ? [1, 2, 3, 5, 7] : d <= 3 ? [1, 2, 5] : d <= 5 ? [1, 3] : [1];
const every = d > 8 ? Math.ceil(d / 8) : 1;
const out = [];
for (let e = Math.floor(Math.log10(lo)) - 1; e <= Math.ceil(Math.log10(hi)); e++) {
  if (every > 1 && ((e % every) + every) % every !== 0) continue;
  for (const m of mant) {
    const t = Number((m * Math.pow(10, e)).toPrecision(12));
    if (t >= lo && t <= hi) out.push(t);
  }
}
if (out.length >= 3) return out;
const raw = (hi - lo) / 4, p = Math.pow(10, Math.floor(Math.log10(raw)));
const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) || 10 * p;
const lin = [];
for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) lin.push(Number(t.toPrecision(12)));
return lin;
"""


def _log_ticker() -> Any:
    from bokeh.models import CustomJSTicker

    return CustomJSTicker(major_code=_LOG_TICKS_JS)


# Labels on log axes: 10ⁿ when every tick is a power of ten, else short ones ("2e4",
# "1.5e5", "0.02", "300"); Bokeh's default prints "1.600e+5" once a log axis spans less
# than a decade and falls back to linear ticks.
_LOG_LABEL_JS = """
const sup = {"-": "\u207b", "0": "\u2070", "1": "\u00b9", "2": "\u00b2", "3": "\u00b3",
             "4": "\u2074", "5": "\u2075", "6": "\u2076", "7": "\u2077", "8": "\u2078", "9": "\u2079"};
const isPow = (t) => t > 0 && Math.abs(Math.log10(t) - Math.round(Math.log10(t))) < 1e-9;
if (ticks.length > 1 && ticks.every(isPow)) {  // whole decades: 10ⁿ
  const e = String(Math.round(Math.log10(tick)));
  return "10" + e.split("").map((c) => sup[c]).join("");
}
const a = Math.abs(tick);
if (a === 0) return "0";
if (a >= 1e4 || a < 1e-3) {
  const [m, e] = tick.toExponential(2).split("e");
  return String(Number(m)) + "e" + String(Number(e));
}
return String(Number(tick.toPrecision(3)));
"""


def _log_formatter() -> Any:
    from bokeh.models import CustomJSTickFormatter

    return CustomJSTickFormatter(code=_LOG_LABEL_JS)


def update(fig: Any, data: Mapping[str, Columns]) -> None:
    """Redraw a figure in place: assign each ``data[name]`` to the figure's
    ``ColumnDataSource`` named ``name`` (as returned by the ``*_data`` functions)."""
    for name, cols in data.items():
        src = fig.select_one({"name": name})
        if src is None:
            raise ValueError(f"figure has no data source named {name!r}")
        src.data = dict(cols)


def set_log(fig: Any, *, x: bool | None = None, y: bool | None = None) -> None:
    """Switch a figure's axes between log and linear in place (``None`` leaves an axis)."""
    from bokeh.models import (
        BasicTicker,
        BasicTickFormatter,
        LinearScale,
        LogScale,
    )

    for flag, axes, attr in ((x, fig.xaxis, "x_scale"), (y, fig.yaxis, "y_scale")):
        if flag is None or isinstance(getattr(fig, attr), LogScale) == flag:
            continue
        setattr(fig, attr, LogScale() if flag else LinearScale())
        for ax in axes:
            if "ticks_125" in ax.tags:
                if flag:
                    _fixed_ticks(ax, _TICKS_125)
                else:
                    ax.ticker, ax.formatter = BasicTicker(), BasicTickFormatter()
            else:
                ax.ticker = _log_ticker() if flag else BasicTicker()
                ax.formatter = _log_formatter() if flag else BasicTickFormatter()


# --------------------------------------------------------------------------- spectrum


def spectrum_data(
    ds: Any,
    *,
    width: int | Sequence[int] | None = None,
    step: int | Sequence[int] | None = None,
    seed: SeedSel = "mean",
    eigen_range: tuple[int, int] | None = None,
    by: Literal["step", "width"] = "width",
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
    by: Literal["step", "width"] = "width",
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


def _finished(ds: Any) -> Any:
    from ntkbench.cube import finished

    return finished(ds)


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


# --------------------------------------------------------------------------- paper figures
#
# The pieces every paper figure is made of. A paper figure is described by a *figure-data*
# dict, computed from the cubes by the paper's ``*_data`` function; its builder reads only
# that dict (never a cube), and :func:`apply` redraws a built figure in place from a new
# dict. Keys (all optional except ``sources``):
#
#   ``sources``   {source name: columns}               the named ColumnDataSources
#   ``panels``    [[panel name, ...], ...]             the grid of plots (rows of names)
#   ``scales``    {panel: [log_x, log_y]}
#   ``titles`` / ``x_labels`` / ``y_labels``  {panel: text}
#   ``header``    text (HTML) of the Div named "header" above the grid
#   ``ranges``    {colour mapper name: [low, high]}
#   ``spans``     {span name: location or None (hidden)}
#   ``layout``    anything JSON-able that fixes the structure beyond the above (e.g. which
#                 quantity a heat map colours: its palette and log scale)
#
# What cannot change in place (panels, scales, source/mapper/span names, ``layout``) is the
# figure's :func:`layout_key`; a widget rebuilds the figure when it differs.

FigureData = dict[str, Any]


def lighten(hex_color: str, amount: float = 0.55) -> str:
    """``hex_color`` mixed with white (``amount`` 0 = unchanged, 1 = white).

    >>> lighten("#000000", 0.5)
    '#808080'
    """
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    mix = [round(c + (255 - c) * amount) for c in (r, g, b)]
    return "#" + "".join(f"{c:02x}" for c in mix)


_SI_LABEL_JS = """
const a = Math.abs(tick);
for (const [v, u] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
  if (a >= v) return String(Number((tick / v).toPrecision(3))) + u;
}
return String(Number(tick.toPrecision(3)));
"""


def si_formatter() -> Any:
    """Compact SI tick labels (``20k``, ``1.5M``) instead of ``2.000e+4``."""
    from bokeh.models import CustomJSTickFormatter

    return CustomJSTickFormatter(code=_SI_LABEL_JS)


def si_text(v: float, fmt: str = "{:.2f}") -> str:
    """A number as a cell label: ``1.23M``, ``45.6k``, else ``fmt`` ("" for NaN/Inf).

    >>> si_text(1234567.0), si_text(0.5), si_text(float("nan"))
    ('1.23M', '0.50', '')
    """
    if not np.isfinite(v):
        return ""
    if abs(v) >= 1e6:
        return f"{v / 1e6:.3g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:.3g}k"
    return fmt.format(v)


def seed_mode(seed: Any, ds: Any) -> Any:
    """Check a seed selection against a cube: ``"mean"`` (mean ± std), ``"all"`` (every
    seed) or one of the cube's seeds (returned as an int); ``ValueError`` naming ``seed``
    otherwise."""
    if seed in ("mean", "all"):
        return seed
    if "seed" in ds.dims and seed not in ds["seed"].values.tolist():
        raise ValueError(f"seed must be 'mean', 'all' or one of {ds['seed'].values.tolist()}, got {seed!r}")
    return int(seed)


def seed_traces(da: Any, seed: Any, *, spread: str = "std") -> list[tuple[np.ndarray, np.ndarray | None]]:
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


def panel_style(fig: Any, legend: bool, location: str = "bottom_left", *, beside: str | None = None) -> None:
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


def _dashed_span(fig: Any, name: str, location: float | None, *, color: str, width: float) -> Any:
    """The dashed vertical ``Span`` of :func:`step_marker` and :func:`measure_plot`."""
    from bokeh.models import Span

    span = Span(
        location=float(location) if location is not None else float("nan"),
        dimension="height",
        line_color=color,
        line_dash="dashed",
        line_width=width,
        name=name,
        visible=location is not None,
    )
    fig.add_layout(span)
    return span


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
    ``column(header, gridplot)`` named ``name``."""
    from bokeh.layouts import column, gridplot

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


def figure_data(name: str, header: str = "") -> FigureData:
    """An empty figure-data dict for figure ``name`` (its ``layout``) with ``header``; fill
    it with :func:`set_panel` and ``data["sources"][...] = columns``."""
    return {
        "layout": name,
        "header": header,
        "panels": [],
        "legend": [],
        "sources": {},
        "titles": {},
        "x_labels": {},
        "y_labels": {},
        "scales": {},
    }


def set_panel(data: FigureData, key: str, title: str, x_label: str, y_label: str, *, log_x: bool, log_y: bool) -> None:
    """The texts and axis scales of panel ``key`` in figure data ``data``."""
    data["titles"][key], data["x_labels"][key], data["y_labels"][key] = title, x_label, y_label
    data["scales"][key] = [log_x, log_y]


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


def natural_width(layout: Any) -> int:
    """The width in pixels a fixed-size layout takes: the widest row of plots (a
    ``gridplot``'s toolbar included), a lone plot's width, or the widest child."""
    from bokeh.models import GridPlot, Plot

    if isinstance(layout, Plot):
        return int(layout.width or 600)
    if isinstance(layout, GridPlot):
        widths: dict[int, int] = {}
        for child, row, _col, *_ in layout.children:
            widths[row] = widths.get(row, 0) + natural_width(child)
        return max(widths.values(), default=600) + (30 if layout.toolbar_location in ("left", "right") else 0)
    children = getattr(layout, "children", None)
    if children:
        parts = [natural_width(c) for c in children]
        return sum(parts) if type(layout).__name__ == "Row" else max(parts)
    return int(getattr(layout, "width", None) or 0)


def fit_width(layout: Any) -> Any:
    """Make a figure shown in a notebook fit its output area at any window size: the
    panels of a grid flow into as many rows as the width needs (a Bokeh ``Row`` with CSS
    ``flex-wrap``; each panel keeps its size, so no title or tick label is squeezed), the
    header text wraps, and a lone plot wider than the area scales down with it
    (``sizing_mode="scale_width"``, never above its natural size). Glyphs, sources and
    names are untouched, so :func:`apply` and :func:`figure_index` work on the result.
    For the notebook view only: exports are built at their natural size. Returns the
    layout to show (``layout`` itself, or a new root holding its parts)."""
    from bokeh.models import Column, Div, GridPlot, Plot, Row

    if isinstance(layout, GridPlot):
        figs: list[Any] = [child for child, *_ in sorted(layout.children, key=lambda c: (c[1], c[2]))]
        for fig in figs:
            if isinstance(fig, Plot):
                fig.toolbar_location = "above"
                fig.toolbar.autohide = True  # the merged grid toolbar is gone: each panel shows its own on hover
        return Row(
            children=figs, name=layout.name, sizing_mode="stretch_width", styles={"flex-wrap": "wrap", "gap": "6px"}
        )
    if isinstance(layout, Plot):
        natural = natural_width(layout)
        layout.sizing_mode = "scale_width"
        layout.max_width = natural
        return layout
    if isinstance(layout, Div):
        layout.width = None
        layout.sizing_mode = "stretch_width"
        return layout
    if isinstance(layout, (Column, Row)):
        layout.children = [fit_width(child) for child in layout.children]
        layout.sizing_mode = "stretch_width"
        if isinstance(layout, Row):
            old: Any = layout.styles or {}
            styles = {str(k): v for k, v in dict(old).items()}
            styles["flex-wrap"] = "wrap"
            layout.styles = styles  # pyright: ignore[reportAttributeAccessIssue]
        return layout
    return layout


def layout_key(data: Mapping[str, Any]) -> str:
    """What a figure built from ``data`` cannot change in place (see the section notes):
    two figure-data dicts with the same key can be applied to the same figure."""
    import json

    return json.dumps(
        [
            data.get("layout"),
            data.get("panels"),
            data.get("scales"),
            sorted(data.get("sources", {})),
            sorted(data.get("ranges", {})),
            sorted(data.get("spans", {})),
        ],
        sort_keys=True,
        default=str,
    )


def figure_index(fig: Any) -> dict[str, dict[str, Any]]:
    """One walk over a built figure: its named ``sources``, ``plots``, ``mappers``,
    ``spans`` and ``divs`` (name -> model). ``select_one`` per name would walk the whole
    model graph every time."""
    from bokeh.models import ColorMapper, ColumnDataSource, Div, Plot, Span

    index: dict[str, dict[str, Any]] = {k: {} for k in ("sources", "plots", "mappers", "spans", "divs")}
    kinds = (("sources", ColumnDataSource), ("plots", Plot), ("mappers", ColorMapper), ("spans", Span), ("divs", Div))
    for m in fig.references():
        name = getattr(m, "name", None)
        if not name:
            continue
        for key, kind in kinds:
            if isinstance(m, kind):
                index[key][name] = m
    return index


def apply(fig: Any, data: Mapping[str, Any], index: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Redraw a figure built from figure data in place from new figure data (same
    :func:`layout_key`): source columns, panel titles and axis labels, the header, colour
    ranges and span positions. Only what differs is assigned, so a browser receives the
    changes and nothing else. ``index`` is :func:`figure_index` of ``fig`` (computed if
    not given); a name the figure lacks is a ``ValueError``."""
    index = figure_index(fig) if index is None else index

    def get(kind: str, name: str) -> Any:
        try:
            return index[kind][name]
        except KeyError:
            raise ValueError(f"figure has no {kind[:-1]} named {name!r}") from None

    for name, cols in data.get("sources", {}).items():
        src = get("sources", name)
        if dict(src.data) != dict(cols):
            src.data = dict(cols)
    for key, attr in (("titles", None), ("x_labels", "xaxis"), ("y_labels", "yaxis")):
        for name, text in data.get(key, {}).items():
            plot = get("plots", name)
            if attr is None:
                if plot.title.text != text:
                    plot.title.text = text
            elif getattr(plot, attr)[0].axis_label != text:
                getattr(plot, attr)[0].axis_label = text
    if "header" in data:
        div = get("divs", "header")
        if div.text != data["header"]:
            div.text = data["header"]
    for name, (low, high) in data.get("ranges", {}).items():
        mapper = get("mappers", name)
        if (mapper.low, mapper.high) != (low, high):
            mapper.update(low=low, high=high)
    for name, loc in data.get("spans", {}).items():
        span = get("spans", name)
        visible = loc is not None
        if span.visible != visible or (visible and span.location != float(loc)):
            span.update(location=float(loc) if visible else float("nan"), visible=visible)
    for plot in index.get("plots", {}).values():  # legends follow the data to a free corner
        if plot.legend and AUTO_LEGEND in plot.legend[0].tags:
            place_legend(plot, redraw=True)


# --------------------------------------------------------------------------- registry + export


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


_DRIVER: list[Any] = []  # one reused headless Chromium for all PNG/SVG exports


def _quit_driver() -> None:
    while _DRIVER:
        try:
            _DRIVER.pop().quit()
        except Exception:  # pragma: no cover
            pass


def webdriver() -> Any:
    """The Selenium Chrome webdriver used for PNG/SVG export (created once, reused, quit at exit).

    Uses Debian's ``/usr/bin/chromium`` + ``/usr/bin/chromedriver`` (or ``$NTKBENCH_CHROMIUM``
    / ``$NTKBENCH_CHROMEDRIVER``, or whatever is on ``PATH``), headless, with the flags
    needed to run as root.
    """
    if _DRIVER:
        return _DRIVER[0]
    chromium = (
        os.environ.get("NTKBENCH_CHROMIUM")
        or (CHROMIUM if os.path.exists(CHROMIUM) else None)
        or shutil.which("chromium")
        or shutil.which("google-chrome")
    )
    driver = (
        os.environ.get("NTKBENCH_CHROMEDRIVER")
        or (CHROMEDRIVER if os.path.exists(CHROMEDRIVER) else None)
        or shutil.which("chromedriver")
    )
    if not chromium or not driver:
        raise RuntimeError(
            "PNG/SVG export needs headless Chromium and chromedriver, which were not found "
            f"(looked for {CHROMIUM} and {CHROMEDRIVER}). Install them with "
            "`apt-get install chromium chromium-driver` (Debian/Ubuntu), or set "
            "NTKBENCH_CHROMIUM / NTKBENCH_CHROMEDRIVER. HTML export works without a browser."
        )
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.chrome.webdriver import WebDriver as Chrome

    opts = Options()
    opts.binary_location = chromium
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--force-color-profile=srgb",
    ):
        opts.add_argument(arg)
    d = Chrome(service=Service(driver), options=opts)
    _DRIVER.append(d)
    atexit.register(_quit_driver)
    return d


EXPORT_FORMATS = ("png", "svg", "pdf", "html")
"""What :func:`export` writes: PNG (raster), SVG and PDF (vector: paths and text), HTML."""


def export(fig: Any, path: str | os.PathLike, format: str | None = None, *, scale: float = 2) -> Path:
    """Write a figure (or layout) to ``path`` as PNG, SVG, PDF or standalone HTML.

    ``format=None`` takes it from the file suffix; a missing suffix is added. HTML embeds
    BokehJS inline (works offline, no browser needed). PNG (at ``scale`` × the figure's
    pixel size), SVG and PDF render in headless Chromium through :func:`webdriver`.

    SVG and PDF are vector drawings a journal accepts: every panel of a layout is drawn
    with Bokeh's SVG backend (lines, glyphs and legends as paths, labels as ``<text>``),
    and the panels and the header text are composed into one SVG at their places on the
    page (:func:`vector_svg`); the PDF is Chromium's print of that SVG (paths and text, one
    page of the figure's size). The figure itself is not changed.

    Returns the written path.

    Example
    -------
    >>> from ntkbench.testing import synthetic_cube
    >>> import tempfile, os
    >>> p = export(FIGURES["measure"](synthetic_cube()), os.path.join(tempfile.mkdtemp(), "m"), "html")
    >>> p.suffix, p.stat().st_size > 100_000
    ('.html', True)
    """
    path = Path(path)
    if format is None:
        format = path.suffix.lstrip(".").lower() or "png"
    format = format.lower()
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be 'png', 'svg', 'pdf' or 'html', got {format!r}")
    if path.suffix.lower() != f".{format}":
        path = path.with_name(path.name + f".{format}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if format == "html":
        from bokeh.embed import file_html
        from bokeh.resources import INLINE

        title = getattr(getattr(fig, "title", None), "text", None) or "ntkbench figure"
        html = file_html(fig, resources=INLINE, title=title)
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, path)
        return path
    drv = webdriver()
    if format == "png":
        img = _screenshot(fig, drv, scale)
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
        return path
    svg = vector_svg(fig, driver=drv)
    if format == "svg":
        tmp.write_text(svg, encoding="utf-8")
    else:
        tmp.write_bytes(svg_to_pdf(svg, driver=drv))
    os.replace(tmp, path)
    return path


def _svg_page(fig: Any) -> str:
    """Standalone HTML of ``fig`` (BokehJS inline) in which every plot draws with the SVG
    backend. The switch is made in the serialized document, so the figure (possibly shown
    live in a notebook) is not touched."""
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.embed.elements import html_page_for_render_items
    from bokeh.embed.util import OutputDocumentFor, standalone_docs_json_and_render_items
    from bokeh.models import Plot
    from bokeh.resources import INLINE

    ids = {m.id for m in fig.references() if isinstance(m, Plot)}
    with OutputDocumentFor([fig], always_new=True) as doc:
        docs_json, items = standalone_docs_json_and_render_items([fig], suppress_callback_warning=True)
        bundle = bundle_for_objs_and_resources([doc], INLINE)

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            if o.get("type") == "object" and o.get("id") in ids:
                o.setdefault("attributes", {})["output_backend"] = "svg"
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(docs_json)
    template = "{% block preamble %}<style>html, body { margin: 0; padding: 0; border: 0; }</style>{% endblock %}"
    return html_page_for_render_items(bundle, docs_json, items, title="", template=template)  # pyright: ignore[reportArgumentType]


# Collects, from the rendered page, each plot's SVG (Bokeh's SVG backend) and the words of
# every Div (the paper figures' headers) with their boxes, relative to the root's corner.
_VECTOR_JS = r"""
const {PlotView} = Bokeh.require("models/plots/plot")
const root = Bokeh.index.roots[0]
const r0 = root.el.getBoundingClientRect()
const out = {plots: [], words: []}
// lay every plot out again first: on the first render with the SVG backend a side-panel
// legend can be measured too wide (the frame squeezed to the left); a second layout is right
function relayout(view) {
  if (view instanceof PlotView) view.invalidate_layout()
  for (const c of (view.child_views ?? [])) relayout(c)
}
relayout(root)
function texts(node, cb) {
  for (const c of node.childNodes) {
    if (c.nodeType === 3) cb(c)
    else texts(c.shadowRoot ?? c, cb)
  }
}
function visit(view) {
  if (view instanceof PlotView) {
    const r = view.el.getBoundingClientRect()
    const {ctx} = view.export("svg")
    out.plots.push({x: r.left - r0.left, y: r.top - r0.top, svg: ctx.get_serialized_svg(true)})
    return
  }
  if (view.markup_el != null) {
    texts(view.markup_el, (t) => {
      const st = getComputedStyle(t.parentElement)
      const re = /\S+/g
      let m
      while ((m = re.exec(t.data)) !== null) {
        const rg = document.createRange()
        rg.setStart(t, m.index)
        rg.setEnd(t, m.index + m[0].length)
        const b = rg.getBoundingClientRect()
        out.words.push({x: b.left - r0.left, y: b.top - r0.top, w: b.width, h: b.height, s: m[0],
          size: st.fontSize, weight: st.fontWeight, style: st.fontStyle, family: st.fontFamily, color: st.color})
      }
    })
  }
  for (const c of (view.child_views ?? [])) visit(c)
}
visit(root)
return out
"""


def vector_svg(fig: Any, *, driver: Any = None, timeout: float = 30) -> str:
    """One SVG document of a figure or layout, made of paths and text only.

    Every panel is rendered in headless Chromium with Bokeh's SVG backend and placed (as a
    nested ``<svg>``) where the layout puts it; the words of header ``Div`` elements become
    ``<text>`` runs at their rendered positions, keeping font size, weight and colour.
    Toolbars are left out. ``driver`` defaults to :func:`webdriver`.

    Not run as a doctest (it starts headless Chromium; tests/test_vector_export.py runs it):

    >>> svg = vector_svg(FIGURES["measure"](synthetic_cube()))   # doctest: +SKIP
    >>> "<image" in svg                                         # doctest: +SKIP
    False
    """
    import re
    import tempfile
    from xml.sax.saxutils import escape, quoteattr

    from bokeh.io.export import wait_until_render_complete

    drv = driver if driver is not None else webdriver()
    with tempfile.TemporaryDirectory(prefix="ntkbench-svg-") as tmpdir:
        page = Path(tmpdir) / "figure.html"
        page.write_text(_svg_page(fig), encoding="utf-8")
        drv.get(page.resolve().as_uri())
        wait_until_render_complete(drv, int(timeout))
        found = drv.execute_script(_VECTOR_JS)
    if not found["plots"]:
        raise ValueError(f"{type(fig).__name__} has no plot to export as SVG")
    parts: list[str] = []
    width = height = 0.0
    for i, p in enumerate(found["plots"]):
        svg = str(p["svg"])
        head = re.match(r"<svg\b[^>]*>", svg)
        size = re.search(r'\bwidth="([\d.]+)"[^>]*\bheight="([\d.]+)"', head.group(0)) if head else None
        if size is None:
            raise RuntimeError(f"Bokeh's SVG of panel {i} has no size: {svg[:200]!r}")
        w, h = float(size.group(1)), float(size.group(2))
        x, y = round(float(p["x"]), 2), round(float(p["y"]), 2)
        width, height = max(width, x + w), max(height, y + h)
        # ids (clip paths) unique across panels
        svg = re.sub(r'id="([^"]+)"', rf'id="p{i}-\1"', svg)
        svg = re.sub(r"url\(#([^)]+)\)", rf"url(#p{i}-\1)", svg)
        svg = re.sub(r"<svg\b[^>]*>", f'<svg x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}">', svg, count=1)
        svg = re.sub(r"<image\b[^>]*>", _image_as_rects, svg)  # colour bars are drawn as small images
        parts.append(svg)
    # words -> runs: consecutive words on one line in one style
    runs: list[dict[str, Any]] = []
    for word in found["words"]:
        style = tuple(word[k] for k in ("size", "weight", "style", "family", "color"))
        last = runs[-1] if runs else None
        if (
            last is not None
            and last["style"] == style
            and abs(last["y"] - word["y"]) < 0.5
            and 0 <= word["x"] - last["end"] < float(word["h"])
        ):
            last["text"] += " " + word["s"]
            last["end"] = word["x"] + word["w"]
        else:
            runs.append(
                dict(style=style, x=word["x"], y=word["y"], h=word["h"], end=word["x"] + word["w"], text=word["s"])
            )
    texts = []
    for r in runs:
        size, weight, fstyle, family, color = r["style"]
        base = r["y"] + 0.81 * r["h"]  # baseline: the ascent of Helvetica/Arial in the line box
        width, height = max(width, r["end"]), max(height, r["y"] + r["h"])
        texts.append(
            f'<text x="{r["x"]:.2f}" y="{base:.2f}" font-size={quoteattr(size)} font-weight={quoteattr(weight)} '
            f"font-style={quoteattr(fstyle)} font-family={quoteattr(family)} fill={quoteattr(color)}>"
            f"{escape(r['text'])}</text>"
        )
    width, height = int(np.ceil(width)), int(np.ceil(height))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">\n'
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>\n'
        + "\n".join(texts + parts)
        + "\n</svg>\n"
    )


def _image_as_rects(match: Any, max_rects: int = 100_000) -> str:
    """An SVG ``<image>`` holding a PNG data URL (a colour bar's palette strip, an image
    glyph such as :func:`kernel_image`) as a group of filled rectangles: equal rows are
    merged, and each run of equal pixels in them is one rectangle. Left as it is when it
    would take more than ``max_rects`` rectangles or is not a PNG data URL."""
    import base64
    import io
    import re

    from PIL import Image

    tag = match.group(0)
    href = re.search(r'href="data:image/png;base64,([^"]+)"', tag)
    size = re.search(r'\bwidth="([\d.]+)"[^>]*\bheight="([\d.]+)"', tag)
    if href is None or size is None:
        return tag
    with Image.open(io.BytesIO(base64.b64decode(href.group(1)))) as im:
        px = np.asarray(im.convert("RGBA")).astype(np.int64)
    ih, iw = px.shape[:2]
    packed = (px[..., 0] << 24) | (px[..., 1] << 16) | (px[..., 2] << 8) | px[..., 3]  # one int per pixel
    row_starts = np.flatnonzero(np.r_[True, (packed[1:] != packed[:-1]).any(axis=1)])
    row_ends = np.r_[row_starts[1:], ih]
    starts = [np.flatnonzero(np.r_[True, packed[r, 1:] != packed[r, :-1]]) for r in row_starts]
    if sum(len(c) for c in starts) > max_rects:
        return tag
    sx, sy = float(size.group(1)) / iw, float(size.group(2)) / ih
    rects = []
    for r0, r1, cols in zip(row_starts, row_ends, starts, strict=True):
        for c0, c1 in zip(cols, np.r_[cols[1:], iw], strict=True):
            v = int(packed[r0, c0])
            red, green, blue, alpha = (v >> 24) & 255, (v >> 16) & 255, (v >> 8) & 255, v & 255
            if alpha:
                opacity = f' fill-opacity="{alpha / 255:.3g}"' if alpha < 255 else ""
                rects.append(
                    f'<rect x="{c0 * sx:.3f}" y="{r0 * sy:.3f}" width="{(c1 - c0) * sx:.3f}" '
                    f'height="{(r1 - r0) * sy:.3f}" fill="rgb({red},{green},{blue})"{opacity}/>'
                )
    transform = re.search(r'transform="([^"]*)"', tag)
    attr = f' transform="{transform.group(1)}"' if transform else ""
    return f'<g shape-rendering="crispEdges"{attr}>{"".join(rects)}</g>'


def svg_to_pdf(svg: str, *, driver: Any = None) -> bytes:
    """A one-page PDF of an SVG document (as :func:`vector_svg` writes it), printed by
    headless Chromium: vector paths and text, the page the SVG's size (96 px per inch)."""
    import base64
    import re
    import tempfile

    m = re.search(r'<svg[^>]*\bwidth="([\d.]+)"[^>]*\bheight="([\d.]+)"', svg)
    if m is None:
        raise ValueError("svg must be an SVG document with width and height")
    w, h = float(m.group(1)), float(m.group(2))
    drv = driver if driver is not None else webdriver()
    with tempfile.TemporaryDirectory(prefix="ntkbench-pdf-") as tmpdir:
        page = Path(tmpdir) / "figure.svg"
        page.write_text(svg, encoding="utf-8")
        drv.get(page.resolve().as_uri())
        pdf = drv.execute_cdp_cmd(
            "Page.printToPDF",
            {
                "paperWidth": (w + 1) / 96,
                "paperHeight": (h + 1) / 96,
                "marginTop": 0,
                "marginBottom": 0,
                "marginLeft": 0,
                "marginRight": 0,
                "printBackground": True,
                "pageRanges": "1",
                "scale": 1,
            },
        )
    return base64.b64decode(pdf["data"])


def _screenshot(fig: Any, drv: Any, scale: float) -> Any:
    from bokeh.io.export import get_screenshot_as_png

    if scale != 1:
        # the reused driver renders at device scale 1; emulate hi-dpi for this screenshot
        drv.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 0, "height": 0, "deviceScaleFactor": float(scale), "mobile": False},
        )
    try:
        return get_screenshot_as_png(fig, driver=drv, timeout=30, scale_factor=scale)
    finally:
        if scale != 1:
            drv.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
