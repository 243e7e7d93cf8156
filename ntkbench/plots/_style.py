"""The house style of every figure: fonts, palettes, axes (fixed and log ticks, log/linear
switching), legend style, number formatters (SI, log labels) and the dashed marker line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

FONT = "Helvetica, Arial, sans-serif"


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
