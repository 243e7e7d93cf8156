"""Where a figure's parts go: the legend in a free corner of the plot or beside it, and a
layout's width, fitted to a notebook's output area."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ntkbench._types import LegendSide

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


def legend_beside(fig: Any, side: LegendSide = "right", labels: Sequence[str] | None = None) -> None:
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
