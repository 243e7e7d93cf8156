"""The choice strings of ntkbench's signatures as ``Literal`` aliases, in one place (as
xarray's ``core/types.py``), and the plain type aliases the figure modules share.

A signature that takes one of these says which strings it accepts, and a type checker
catches a misspelt one; the tuple of the allowed values at run time is
``typing.get_args`` of the alias (e.g. :data:`ntkbench.plots.EXPORT_FORMATS`).
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = [
    "Columns",
    "SeedMode",
    "SeedSel",
    "Spread",
    "SpectrumBy",
    "LegendSide",
    "ControlKind",
    "PaperControlKind",
    "ExportFormat",
]

Columns = dict[str, Any]
"""The columns of one Bokeh ``ColumnDataSource``: column name -> values."""

SeedMode = Literal["mean", "all"]
"""How a paper figure draws the seeds (:func:`ntkbench.plots.seed_mode`): ``"mean"`` (the
mean with a band of its spread) or ``"all"`` (one line per seed); a seed value (an int)
draws that seed alone."""

SeedSel = Literal["mean"] | int
"""How a cube figure (:func:`ntkbench.plots.spectrum_plot`, ...) reduces the ``seed`` dim:
``"mean"`` (mean ± std) or one seed value."""

Spread = Literal["std", "se"]
"""The band around a mean over seeds (:func:`ntkbench.plots.seed_traces`): standard
deviation or standard error of the mean."""

SpectrumBy = Literal["step", "width"]
"""One line per step or per width in :func:`ntkbench.plots.spectrum_plot`."""

LegendSide = Literal["right", "below"]
"""Where :func:`ntkbench.plots.legend_beside` puts a legend beside the plot."""

ControlKind = Literal["dropdown", "toggle", "checkbox", "slider", "multiple", "text", "int", "float"]
"""The kinds of a notebook control (:class:`ntkbench.widgets.Control`)."""

PaperControlKind = Literal["slider", "dropdown", "toggle", "checkbox"]
"""The control kinds a standalone HTML paper figure offers
(:data:`ntkbench.standalone.PAPER_CONTROL_KINDS`)."""

ExportFormat = Literal["png", "svg", "pdf", "html"]
"""What :func:`ntkbench.plots.export` writes (:data:`ntkbench.plots.EXPORT_FORMATS`)."""
