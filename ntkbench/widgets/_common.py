"""Pieces every notebook view shares: a wrapping row of widgets, the display protocol, waiting on a run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def join_run(owner: Any, timeout: float | None = None) -> Any:
    """Wait for ``owner._thread`` (a run in the background) and return ``owner.result``;
    raise ``TimeoutError`` if it is still running after ``timeout`` seconds, or the run's
    error (``owner.error``)."""
    thread = owner._thread
    if thread is None:
        raise RuntimeError("no run was started")
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"run did not finish within {timeout} s")
    if owner.error is not None:
        raise owner.error
    return owner.result


def flow(children: Sequence[Any], *, gap: str = "4px 12px") -> Any:
    """An ipywidgets row that wraps: its children sit side by side while they fit the
    notebook's output area and continue on the next line when they do not (CSS flex-wrap),
    so a narrow window (a laptop, the file browser open) never clips a plot or a control.
    Use it where ``HBox`` would overflow."""
    import ipywidgets as w

    layout = w.Layout(display="flex", flex_flow="row wrap", align_items="flex-start", width="100%", grid_gap=gap)
    return w.Box(list(children), layout=layout)


class Shown:
    """Shown in a notebook as its ``widget`` attribute (the cell's value displays it)."""

    widget: Any

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
