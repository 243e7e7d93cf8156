"""ipywidgets explorers around the Bokeh plots; figure export; quick runs from a notebook.

:class:`Explorer` shows a cube's spectrum, a measure vs step and (with a ``width`` dim) the
measure vs width scaling plot. Its controls redraw the figures *in place*: each figure is
shown once through ``jupyter_bokeh.BokehModel`` and a control change only assigns new
columns to the figure's ``ColumnDataSource``\\ s (and flips scales or moves a marker), so
nothing re-renders and nothing flickers. The controls, figures and sources are public
attributes, so code (and tests) can drive an explorer without a browser.

Call ``bokeh.io.output_notebook(INLINE, hide_banner=True)`` (``from bokeh.resources import
INLINE``) once before showing an explorer: ``BokehModel`` uses the BokehJS the page loaded,
and inline resources work offline.

Example
-------
>>> from ntkbench.testing import synthetic_cube
>>> from ntkbench.widgets import Explorer
>>> ex = Explorer(synthetic_cube(widths=(16, 64), seeds=(0, 1), steps=(0, 10, 100), n_eigen=8))
>>> ex.widths.value = (64,)
>>> ex.sources["measure"]["lines"].data["label"]
['width 64']

Layout
------
One idea per private module, all re-exported here:

- ``_explorer``: :class:`Explorer`.
- ``_run_panel``: :class:`RunPanel`, a quick sweep from a notebook.
- ``_controls``: :class:`Control` (a control described without ipywidgets) and its
  makers ``seed_control``, ``step_control``, ``int_list_control``, ``parse_ints``.
- ``_figures``: :class:`LiveFigure` (a Bokeh figure redrawn in place) and
  :class:`ExportControl` (its export buttons).
- ``_common``: ``flow`` (a wrapping row), ``Shown`` (display protocol), ``join_run``.
"""

from ntkbench.widgets._common import Shown, flow, join_run
from ntkbench.widgets._controls import Control, int_list_control, parse_ints, seed_control, step_control
from ntkbench.widgets._explorer import Explorer
from ntkbench.widgets._figures import ExportControl, LiveFigure
from ntkbench.widgets._run_panel import RunPanel

__all__ = [
    "Explorer",
    "RunPanel",
    "Control",
    "seed_control",
    "step_control",
    "int_list_control",
    "parse_ints",
    "LiveFigure",
    "ExportControl",
    "Shown",
    "join_run",
    "flow",
]
