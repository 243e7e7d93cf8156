"""Paper reproductions, one module per paper, found through :data:`REGISTRY`.

``ntkbench reproduce PAPER [--quick] --out DIR [--workers N | --scheduler ADDR]`` looks
``PAPER`` up in :data:`REGISTRY` and calls the module's ``run``.

Plug-in protocol
----------------
A paper module (``ntkbench/papers/<key>.py``) provides::

    KEY: str                      # registry key, e.g. "collective"
    TITLE: str                    # the paper's title
    def run(out, quick=False, workers=None, scheduler=None) -> xarray.Dataset:
        '''Run the paper's experiments into the folder ``out`` (resuming finished runs,
        typically through ntkbench.sweep) and return the combined cube. ``quick``
        selects a small configuration that finishes in about a minute on 2 cores;
        ``workers`` / ``scheduler`` are passed on to ntkbench.sweep.'''

and is registered here by adding ``"<key>": "ntkbench.papers.<key>"`` to
:data:`REGISTRY`. Values are module names (imported on demand, so listing the registry
stays cheap) or already imported modules.

Example
-------
>>> from ntkbench.papers import REGISTRY, get
>>> sorted(REGISTRY)  # doctest: +SKIP
['collective', 'data', 'reach', 'scaling']
>>> get("collective").run("runs/collective", quick=True)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["REGISTRY", "get"]

#: paper key -> module (or module name) implementing the plug-in protocol above.
#: Empty until the paper modules are added.
REGISTRY: dict[str, Any] = {
    "collective": "ntkbench.papers.collective",
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
