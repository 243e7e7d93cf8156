"""Paper reproductions, one module per paper, found through :data:`REGISTRY`.

``ntkbench reproduce PAPER [--quick] --out DIR [--workers N | --scheduler ADDR]`` looks
``PAPER`` up in :data:`REGISTRY` and calls the module's ``run``.

Every paper is written against the shared layer, three private modules:

- :mod:`ntkbench.papers._base`: configs → sweep → cubes → figure data → figures → summary
  → export (:func:`~ntkbench.papers._base.reproduce`), :class:`~ntkbench.papers._base.Paper`
  (the protocol's wrappers, written once), :class:`~ntkbench.papers._base.FigureSpec` and
  the small helpers of figure data (``check_choice``, ``need_cube``, ``config_of``,
  ``at_step``, ``seed_or_mean``, ``seed_text``, ``add_seed_series``, ``put_lines``,
  ``line_builder``, ``has_cubes``, ``summary_head``); it re-exports the two below;
- :mod:`ntkbench.papers._stats`: power-law fits, compute frontiers, means over seeds,
  mean ± standard error, ranks and rank correlations, and the one rule for a summary's
  numbers (finite and rounded, else ``None``: ``summary.json`` is strict JSON);
- :mod:`ntkbench.papers._workbench`: the notebook side, a generic ``Workbench`` and
  ``RerunPanel``;

and on the figure pieces of :mod:`ntkbench.plots` (series with seed bands, panels,
formatters, category heat maps, step markers, headers, and the *figure-data* dict that
:func:`ntkbench.plots.apply` redraws in place) and the controls of :mod:`ntkbench.widgets`.
The diverged-run bookkeeping (which runs every figure and summary leaves out) is
:func:`ntkbench.cube.diverged_runs`. A paper module holds only its paper: its configs,
figure data and builders, controls and summary.

Plug-in protocol
----------------
A paper module ``ntkbench/papers/<key>.py`` provides (``configs``, ``run_cubes``, ``run``,
``open_cubes``, ``figures`` and ``Workbench`` come from ``_base.Paper(__name__)``)::

    KEY: str                      # registry key, e.g. "collective"
    TITLE: str                    # the paper's title
    CONFIGS: dict                 # {"quick" | "test" | "full": {experiment: sweep config}}
    def run_cubes(out, config="quick", *, workers=None, scheduler=None, client=None,
                  progress=True) -> dict[str, xarray.Dataset]
    def run(out, quick=False, workers=None, scheduler=None, **kw) -> dict[str, xarray.Dataset]:
        '''Run every experiment into ``out`` (resuming finished runs) and return every
        cube, ``{experiment: Dataset}``; ``quick`` selects a configuration that finishes
        in minutes on 2 cores; ``workers`` / ``scheduler`` go to ntkbench.sweep.'''
    FIGURES: list[_base.FigureSpec]   # one per figure: data(cubes, settings), build(data)
    def controls(cubes) -> list[ntkbench.widgets.Control]
    def defaults(cubes) -> dict   # the settings `reproduce` draws the figures at (optional:
                                  # else the controls' defaults)
    def summarize(cubes) -> dict  # the numbers the claims rest on (strict JSON: a number
                                  # that is not finite is None, _stats.finite)
    def format_summary(summary) -> str
    def configs(name="quick") -> dict   # a deep copy of CONFIGS[name]
    def open_cubes(path) -> dict[str, xarray.Dataset]   # ntkbench.cube.open_many
    class Workbench                     # notebooks: Workbench(open_cubes(path))

Every experiment records ``eigenvalues`` (the probe set's eNTK spectrum at every recorded
step) next to its scalar measures, so any paper cube opens in
:class:`ntkbench.widgets.Explorer` and every spectral measure can be recomputed from it.
Register the module by adding ``"<key>": "ntkbench.papers.<key>"`` to :data:`REGISTRY`
(values are module names, imported on demand, or modules), write its guide in
``docs/papers/<key>.md`` and its notebook in ``notebooks/``.

A new paper module, in outline (see ``collective.py`` for a complete one)::

    '''<Paper title> (<year>): what it claims, what this module reproduces.'''
    from ntkbench import plots
    from ntkbench.papers import _base, _stats
    from ntkbench.papers._base import FigureSpec
    from ntkbench.widgets import Control, seed_control, step_control

    KEY, TITLE = "mypaper", "<Paper title>"
    MEASURES = ["eigenvalues", "entropy", "trace", "loss", "test_loss"]
    CONFIGS = {"quick": {"main": {...sweep config, "paper": KEY,
                                  "record": {"measures": MEASURES, ...}, "grid": {...}}},
               "test": {...}, "full": {...}}

    # the wrappers every paper has; they read KEY, CONFIGS, FIGURES, controls and
    # defaults when called (Paper(__name__, folder=..., rename=..., needs=...) for more)
    _paper = _base.Paper(__name__)
    configs, run_cubes, run = _paper.configs, _paper.run_cubes, _paper.run
    open_cubes, figures = _paper.open_cubes, _paper.figures

    def fig_1_data(ds, *, seed="mean", step=None) -> plots.FigureData:
        # everything that depends on the settings: columns, titles, labels, header
        data = {"header": "<b>F-1</b> ...", "panels": [["f1-main"]], "legend": ["f1-main"],
                "scales": {"f1-main": [True, False]}, "titles": {"f1-main": "..."},
                "x_labels": {"f1-main": "step + 1"}, "y_labels": {"f1-main": "S [nat]"},
                "sources": {}, "spans": {"f1-main-marker": step}}
        lines, bands = plots.empty_lines(), plots.empty_bands()
        x = ds["step"].values + 1.0
        for w in ds["width"].values:
            traces = plots.seed_traces(ds["entropy"].sel(width=w), plots.seed_mode(seed, ds))
            plots.add_series(lines, bands, x, traces, "#1f5fa8", f"width {w}")
        data["sources"] = {"f1-main-lines": lines, "f1-main-bands": bands}
        return data

    def build_1(data):                      # reads the figure data only, never a cube
        def draw(fig, key):
            plots.lines_and_bands(fig, data, key, legend=key in data["legend"])
            plots.step_marker(fig, f"{key}-marker", data["spans"][f"{key}-marker"])
            plots.panel_style(fig, legend=key in data["legend"])
        return plots.panel_grid(data, draw, panel_size=(420, 300), name="F-1")

    FIGURES = [FigureSpec("F-1", lambda cubes, s: fig_1_data(cubes["main"], seed=s["seed"],
                                                             step=s["step"]),
                          build_1, controls=[["seed"], ["step"]])]

    def controls(cubes):
        ds = cubes["main"]
        return [seed_control(ds["seed"].values), step_control(ds["step"].values)]

    def summarize(cubes):                   # every number through _stats: finite or None
        end = cubes["main"]["entropy"].isel(step=-1)
        return {"entropy_end": _stats.mean_se(end)}

    def format_summary(summary):
        lines = _base.summary_head(TITLE, "S in nats", summary)
        mean = _stats.fmt(summary["entropy_end"]["mean"], ".3f")  # None (not finite) as nan
        return "\n".join([*lines, f"S at the end: {mean}"]) + "\n"

    Workbench = _paper.workbench()          # notebooks: Workbench(open_cubes(path))

Example
-------
>>> from ntkbench.papers import REGISTRY, get
>>> sorted(REGISTRY)
['collective', 'data', 'reach', 'scaling']

Not run as a doctest: it trains for minutes (the paper's tests run its small ``test``
config).

>>> cubes = get("collective").run("runs/collective", quick=True)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["REGISTRY", "get"]

#: paper key -> module (or module name) implementing the plug-in protocol above.
REGISTRY: dict[str, Any] = {
    "collective": "ntkbench.papers.collective",
    "data": "ntkbench.papers.data",
    "reach": "ntkbench.papers.reach",
    "scaling": "ntkbench.papers.scaling",
}


def get(key: str) -> ModuleType:
    """The module of paper ``key``; ``ValueError`` listing the known keys if unknown.

    >>> get("no-such-paper")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ValueError: unknown paper 'no-such-paper'; known papers: []
    """
    if key not in REGISTRY:
        raise ValueError(f"unknown paper {key!r}; known papers: {sorted(REGISTRY)}")
    module = REGISTRY[key]
    if isinstance(module, str):
        module = importlib.import_module(module)
    if not callable(getattr(module, "run", None)):
        raise TypeError(f"paper module {module.__name__!r} has no run(out, quick, workers, scheduler)")
    return module
