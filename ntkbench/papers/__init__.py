"""Paper reproductions, one module per paper, found through :data:`REGISTRY`.

``ntkbench reproduce PAPER [--quick] --out DIR [--workers N | --scheduler ADDR]`` looks
``PAPER`` up in :data:`REGISTRY` and calls the module's ``run``.

Every paper is written against the shared layer :mod:`ntkbench.papers._base` (configs →
sweep → cubes → figure data → figures → summary → export, a generic ``Workbench`` and
``RerunPanel``), the figure pieces of :mod:`ntkbench.plots` (series with seed bands,
panels, formatters, category heat maps, step markers, headers, and the *figure-data* dict
that :func:`ntkbench.plots.apply` redraws in place) and the controls of
:mod:`ntkbench.widgets`. A paper module holds only its paper.

Plug-in protocol
----------------
A paper module ``ntkbench/papers/<key>.py`` provides::

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
    def summarize(cubes) -> dict  # the numbers the claims rest on (JSON-able)
    def format_summary(summary) -> str

Every experiment records ``eigenvalues`` (the probe set's eNTK spectrum at every recorded
step) next to its scalar measures, so any paper cube opens in
:class:`ntkbench.widgets.Explorer` and every spectral measure can be recomputed from it.
Register the module by adding ``"<key>": "ntkbench.papers.<key>"`` to :data:`REGISTRY`
(values are module names, imported on demand, or modules), write its guide in
``docs/papers/<key>.md`` and its notebook in ``notebooks/``.

A new paper module, in outline (see ``collective.py`` for a complete one)::

    '''<Paper title> (<year>): what it claims, what this module reproduces.'''
    import sys
    from ntkbench import plots
    from ntkbench.papers import _base
    from ntkbench.papers._base import FigureSpec
    from ntkbench.widgets import Control, seed_control, step_control

    KEY, TITLE = "mypaper", "<Paper title>"
    MEASURES = ["eigenvalues", "entropy", "trace", "loss", "test_loss"]
    CONFIGS = {"quick": {"main": {...sweep config, "paper": KEY,
                                  "record": {"measures": MEASURES, ...}, "grid": {...}}},
               "test": {...}, "full": {...}}

    def configs(name="quick"):
        return _base.pick_config(CONFIGS, name)

    def run_cubes(out, config="quick", **kw):
        cfgs = configs(config) if isinstance(config, str) else config
        return _base.run_experiments(out, cfgs, **kw)

    def run(out, quick=False, workers=None, scheduler=None, *, config=None, **kw):
        return _base.reproduce(sys.modules[__name__], out, config, quick=quick,
                               workers=workers, scheduler=scheduler, **kw)

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

    def summarize(cubes): ...
    def format_summary(summary): ...

    class Workbench(_base.Workbench):       # notebooks: Workbench(open_cubes(path))
        def __init__(self, cubes, *, figures_dir="figures"):
            super().__init__(cubes, FIGURES, controls(cubes), figures_dir=figures_dir, name=KEY)

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
