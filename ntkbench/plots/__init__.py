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
and :func:`apply` redraws a built figure from a new one (its keys: :class:`FigureData`).

Axis labels and units come from each variable's ``long_name`` and ``units`` attributes;
lines over widths use a perceptual palette (Viridis), lines over steps Plasma; hover tools
show the exact values.

The package holds one idea per private module; every public name is re-exported here:

- ``_style``: the house style -- fonts, palettes, axes and log ticks (:func:`new_figure`,
  :func:`style`, :func:`set_log`, :func:`legend_style`), number formatters
  (:func:`si_formatter`, :func:`si_text`), :func:`lighten`.
- ``_layout``: where a figure's parts go -- the legend in a free corner or beside the
  plot (:func:`place_legend`, :func:`legend_beside`), a layout fitted to a notebook's
  output area (:func:`fit_width`, :func:`natural_width`).
- ``_select``: reading a cube for a figure -- :func:`label`, :func:`measures`,
  :func:`check_cube`, :func:`finite_mask` and the seed/step/width selections.
- ``_cube``: the figures of one cube -- spectrum, measure, scaling, heat map and kernel
  image builders with their ``*_data`` functions, :func:`update`, :data:`FIGURES`.
- ``_figure_data``: the figure-data dict of paper figures -- its schema
  :class:`FigureData`, :func:`figure_data`, :func:`set_panel`, :func:`apply`,
  :func:`layout_key`, :func:`figure_index`, :func:`check_figure_data`.
- ``_panels``: the pieces paper figures are made of -- :func:`seed_traces`,
  :func:`add_series`, power-law fit lines (:func:`add_power_fit`), trajectories in the
  plane of two measures (:func:`empty_trajectories`, :func:`add_trajectories`,
  :func:`trajectory_points`), rows of panels comparing nets on a train and a test probe
  (:func:`probe_row`, :func:`phase_row`),
  :func:`panel_grid`, :func:`line_grid`, step markers, the header, category heat maps
  (:func:`heatmap_cells`, :func:`category_heatmap`, :func:`heatmap_rows`) and heat maps of a numeric axis
  against the recorded steps (:func:`step_heatmap_cells`, :func:`step_heatmap`).
- ``_export``: files -- :func:`export` (PNG, SVG, PDF, HTML), :func:`vector_svg`,
  :func:`svg_to_pdf` and the reused headless-Chromium :func:`webdriver` (which reads
  ``CHROMIUM`` / ``CHROMEDRIVER`` from ``ntkbench.plots._export``).

The choice strings of the signatures (seed modes, export formats, ...) are ``Literal``
aliases in :mod:`ntkbench._types`.

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

from ntkbench._types import Columns as Columns
from ntkbench._types import SeedSel as SeedSel
from ntkbench.plots._cube import (
    FIGURES,
    heatmap_data,
    heatmap_plot,
    kernel_image,
    measure_data,
    measure_plot,
    power_law_fit,
    scaling_data,
    scaling_plot,
    spectrum_data,
    spectrum_plot,
    update,
)
from ntkbench.plots._export import (
    CHROMEDRIVER as CHROMEDRIVER,
)
from ntkbench.plots._export import (
    CHROMIUM as CHROMIUM,
)
from ntkbench.plots._export import (
    EXPORT_FORMATS,
    export,
    svg_to_pdf,
    vector_svg,
    webdriver,
)
from ntkbench.plots._figure_data import (
    FIGURE_DATA_KEYS,
    FigureData,
    apply,
    check_figure_data,
    figure_data,
    figure_index,
    layout_key,
    set_panel,
)
from ntkbench.plots._layout import (
    AUTO_LEGEND as AUTO_LEGEND,
)
from ntkbench.plots._layout import (
    CORNERS as CORNERS,
)
from ntkbench.plots._layout import (
    fit_width,
    legend_beside,
    natural_width,
    place_legend,
)
from ntkbench.plots._panels import (
    add_power_fit,
    add_series,
    add_trajectories,
    category_heatmap,
    color_mapper,
    color_range,
    empty_bands,
    empty_lines,
    empty_trajectories,
    header,
    heatmap_cells,
    heatmap_rows,
    line_grid,
    linear_fit,
    lines_and_bands,
    panel,
    panel_grid,
    panel_style,
    phase_row,
    probe_row,
    seed_mode,
    seed_traces,
    si_trace_axes,
    step_heatmap,
    step_heatmap_cells,
    step_marker,
    text_colors,
    trajectory_points,
)
from ntkbench.plots._select import (
    _drop_extra,  # noqa: F401  (ntkbench.standalone uses the cube figures' reductions)
    _select_seed,  # noqa: F401
    check_cube,
    finite_mask,
    label,
    measures,
)
from ntkbench.plots._style import (
    _TICKS_125,  # noqa: F401  (ntkbench.standalone draws the same axes in the browser)
    _colors_for,  # noqa: F401
    _log_formatter,  # noqa: F401
    _log_ticker,  # noqa: F401
    legend_style,
    lighten,
    new_figure,
    palette,
    set_log,
    si_formatter,
    si_text,
    style,
)
from ntkbench.plots._style import (
    FONT as FONT,
)

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
    "natural_width",
    "FigureData",
    "FIGURE_DATA_KEYS",
    "check_figure_data",
    "lighten",
    "si_formatter",
    "si_text",
    "seed_mode",
    "seed_traces",
    "empty_lines",
    "empty_bands",
    "add_series",
    "add_trajectories",
    "empty_trajectories",
    "trajectory_points",
    "probe_row",
    "phase_row",
    "linear_fit",
    "add_power_fit",
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
    "heatmap_rows",
    "step_heatmap",
    "step_heatmap_cells",
    "layout_key",
    "figure_index",
    "apply",
]
