"""Figure data: the dict that describes everything about a paper figure that depends on
its settings (its :class:`FigureData` schema, made with :func:`figure_data` and
:func:`set_panel`), and redrawing a built figure in place from a new one (:func:`apply`,
:func:`layout_key`, :func:`figure_index`).

A paper figure is described by a *figure-data* dict, computed from the cubes by the
paper's ``*_data`` function; its builder reads only that dict (never a cube), and
:func:`apply` redraws a built figure in place from a new dict. The dict is a wire format
(JSON in a standalone HTML page, :mod:`ntkbench.standalone`), so it stays a plain dict;
:class:`FigureData` is its one schema, and a key outside it is an error
(:func:`check_figure_data`), never silently ignored.

What cannot change in place (panels, scales, source/mapper/span names, ``layout``) is the
figure's :func:`layout_key`; a widget rebuilds the figure when it differs.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, TypedDict

from ntkbench._types import Columns
from ntkbench.plots._layout import AUTO_LEGEND, place_legend


class FigureData(TypedDict, total=False):
    """The schema of a figure-data dict; every key is optional (:func:`figure_data` makes
    the usual ones). Panels, sources, colour mappers and spans are named: the builder gives
    its Bokeh models these names, and :func:`apply` finds them by name."""

    layout: Any
    """Anything JSON-able that fixes the structure beyond the keys below: the figure's name
    (:func:`figure_data`), or e.g. ``[name, quantities]`` or ``{"name": ..., "steps": ...}``
    for what a heat map colours or how many columns it has. Part of :func:`layout_key`."""
    header: str
    """Text (HTML) of the ``Div`` named ``"header"`` above the grid."""
    panels: list[list[str]]
    """The grid of plots: rows of panel names. Part of :func:`layout_key`."""
    legend: list[str]
    """The panels that show a legend (:func:`line_grid`, the papers' builders)."""
    legend_location: str
    """Where :func:`line_grid` puts a legend while its plot has no data (a Bokeh location,
    ``"top_right"``, ``"bottom_left"``, ...); the builder's default otherwise."""
    sources: dict[str, Columns]
    """``{source name: columns}``: the named ``ColumnDataSource``\\ s (source names are
    part of :func:`layout_key`; the columns change in place)."""
    titles: dict[str, str]
    """``{panel: title}``."""
    x_labels: dict[str, str]
    """``{panel: x axis label}``."""
    y_labels: dict[str, str]
    """``{panel: y axis label}``."""
    scales: dict[str, list[bool]]
    """``{panel: [log_x, log_y]}``. Part of :func:`layout_key`."""
    ranges: dict[str, list[float]]
    """``{colour mapper name: [low, high]}`` (mapper names are part of :func:`layout_key`)."""
    spans: dict[str, float | None]
    """``{span name: x location, or None (hidden)}``: step markers (span names are part of
    :func:`layout_key`)."""
    factors: dict[str, list[str]]
    """``{"x": factors, "y": factors}``: the categorical axes of a heat-map figure."""


FIGURE_DATA_KEYS: frozenset[str] = FigureData.__required_keys__ | FigureData.__optional_keys__
"""Every key a figure-data dict may have (those of :class:`FigureData`)."""


def check_figure_data(data: Mapping[str, Any]) -> None:
    """``ValueError`` naming each key of ``data`` that :class:`FigureData` does not have
    (a misspelt key would otherwise be silently ignored), with the nearest known key.

    >>> check_figure_data({"panels": [], "legnd": []})
    Traceback (most recent call last):
    ...
    ValueError: figure data has an unknown key 'legnd' (did you mean 'legend'?); ...
    """
    unknown = [k for k in data if k not in FIGURE_DATA_KEYS]
    if not unknown:
        return
    names = []
    for k in unknown:
        near = difflib.get_close_matches(str(k), sorted(FIGURE_DATA_KEYS), n=1)
        names.append(f"{k!r} (did you mean {near[0]!r}?)" if near else repr(k))
    what = "an unknown key" if len(unknown) == 1 else "unknown keys"
    raise ValueError(
        f"figure data has {what} {', '.join(names)}; the keys of plots.FigureData are {sorted(FIGURE_DATA_KEYS)}"
    )


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


def layout_key(data: Mapping[str, Any]) -> str:
    """What a figure built from ``data`` cannot change in place (see the module notes):
    two figure-data dicts with the same key can be applied to the same figure. A key
    outside :class:`FigureData` is a ``ValueError`` (:func:`check_figure_data`)."""
    import json

    check_figure_data(data)

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
    not given); a name the figure lacks is a ``ValueError``, and so is a key outside
    :class:`FigureData` (:func:`check_figure_data`)."""
    check_figure_data(data)
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
