"""Figures in a notebook: a Bokeh figure redrawn in place from figure data, and its export buttons."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ntkbench import plots
from ntkbench.widgets._common import flow


class LiveFigure:
    """A Bokeh figure shown in a notebook that redraws in place from figure data.

    ``build(data)`` makes the Bokeh layout from a figure-data dict (``ntkbench.plots``,
    "paper figures"); :meth:`update` applies a new dict to the figure already shown
    (:func:`ntkbench.plots.apply`: only what changed is sent to the page, in one batch), or
    builds a new figure when the dict's :func:`ntkbench.plots.layout_key` differs, closing
    the ``BokehModel`` it replaces. Attributes: ``figure`` (the Bokeh layout), ``model``
    (its ``jupyter_bokeh.BokehModel``), ``view`` (an ipywidgets ``Box`` holding the model),
    ``data`` (the dict last applied).

    Not run as a doctest (it needs a notebook page to draw in; tests/test_widgets.py and
    the paper Workbench tests drive it):

    >>> live = LiveFigure(lambda data: build_fig(data), fig_data(cube))  # doctest: +SKIP
    >>> live.update(fig_data(cube, seed="all"))                         # doctest: +SKIP
    """

    def __init__(self, build: Callable[[Any], Any], data: Mapping[str, Any] | None = None):
        import ipywidgets as w

        self.build = build
        self.view = w.Box()
        self.figure: Any = None
        self.model: Any = None
        self.data: Mapping[str, Any] | None = None
        self._key: str | None = None
        self._index: dict[str, dict[str, Any]] = {}
        if data is not None:
            self.update(data)

    def update(self, data: Mapping[str, Any]) -> None:
        """Show ``data``: in place when its layout matches the figure shown, else rebuilt."""
        if self.figure is None or plots.layout_key(data) != self._key:
            self.rebuild(data)
            return
        doc = self.figure.document
        if doc is not None:  # one batch of changes for the page
            doc.hold("combine")
        try:
            plots.apply(self.figure, data, self._index)
        finally:
            if doc is not None:
                doc.unhold()
        self.data = data

    def rebuild(self, data: Mapping[str, Any]) -> None:
        """Build a new figure (and model) from ``data``; close the model it replaces."""
        from jupyter_bokeh import BokehModel

        fig = plots.fit_width(self.build(data))  # fits a narrow window; exports are built apart
        old = self.model
        self.figure, self.data, self._key = fig, data, plots.layout_key(data)
        self._index = plots.figure_index(fig)
        self.model = BokehModel(fig)
        self.view.children = (self.model,)
        if old is not None:
            self._close_model(old)

    @staticmethod
    def _close_model(model: Any) -> None:
        # drop the figure from its document too, so the second close() ipywidgets makes on
        # garbage collection finds nothing to undo
        doc, fig = model._document, model._model
        model.close()
        if doc is not None and fig in doc.roots:
            doc.remove_root(fig)

    def close(self) -> None:
        """Close the model and empty the view."""
        if self.model is not None:
            self._close_model(self.model)
        self.model = None
        self.view.children = ()


class ExportControl:
    """Figure picker, format (PNG / SVG / PDF / standalone HTML), file name and an Export button
    writing ``folder/<name>-<figure>.<format>`` through :func:`ntkbench.plots.export`.

    With ``interactive`` (``interactive(figure) -> Bokeh layout`` whose controls work in a
    plain browser, see :mod:`ntkbench.standalone`) the format menu also offers "interactive
    HTML" (format ``"interactive"``), written as ``folder/<name>-<interactive_name>.html``
    (default ``<figure>-interactive``).

    ``figures`` is a mapping or a function returning one (``{figure name: Bokeh layout}``,
    read at export time, so the figure is written as currently shown). Attributes:
    ``figure``, ``format``, ``name``, ``button``, ``status`` (ipywidgets) and ``widget``.
    Errors are shown, HTML-escaped, in ``status``.
    """

    def __init__(
        self,
        figures: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
        folder: str | Path = "figures",
        *,
        name: str = "ntkbench",
        options: Sequence[str] | None = None,
        show_name: bool = True,
        interactive: Callable[[str], Any] | None = None,
        interactive_name: str | None = None,
    ):
        import ipywidgets as w

        self._figures = figures
        self.interactive = interactive
        self.interactive_name = interactive_name
        self.folder = Path(folder)
        opts = list(options) if options is not None else list(self.figures())
        self.figure = w.Dropdown(
            options=opts, value=opts[0] if opts else None, description="figure", layout=w.Layout(width="200px")
        )
        self.format = w.Dropdown(
            options=[("PNG", "png"), ("SVG", "svg"), ("PDF", "pdf"), ("HTML", "html")]
            + ([("interactive HTML", "interactive")] if interactive is not None else []),
            value="png",
            description="format",
            layout=w.Layout(width="170px"),
        )
        self.name = w.Text(value=name, description="file name", layout=w.Layout(width="240px"))
        self.button = w.Button(description="Export", icon="download", button_style="primary")
        self.status = w.HTML(value="")
        self.button.on_click(self._on_click)
        row = [self.figure, self.format] + ([self.name] if show_name else []) + [self.button]
        self.widget = w.VBox([flow(row), self.status])

    def figures(self) -> Mapping[str, Any]:
        """The exportable figures now."""
        return self._figures() if callable(self._figures) else self._figures

    def export(self, figure: str | None = None, format: str | None = None, name: str | None = None) -> Path:
        """Write one figure (defaults: the control's values); return the path, also shown
        in ``status``."""
        figs = self.figures()
        figure = str(figure or self.figure.value)
        if figure not in figs:
            raise ValueError(f"figure must be one of {list(figs)}, got {figure!r}")
        format = str(format or self.format.value)
        name = (name or self.name.value or "ntkbench").strip()
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"name must be a plain file name (no folders), got {name!r}")
        if format == "interactive":
            if self.interactive is None:
                raise ValueError("format 'interactive' needs an interactive export; this control has none")
            from ntkbench import standalone

            stem = (
                name if name.lower().endswith(".html") else f"{name}-{self.interactive_name or figure + '-interactive'}"
            )
            path = standalone.write_html(self.interactive(figure), self.folder / stem, title=f"{name} {figure}")
            self.status.value = f"wrote <code>{html.escape(str(path))}</code>"
            return path
        stem = name if name.lower().endswith(f".{format}") else f"{name}-{figure}"
        path = plots.export(figs[figure], self.folder / stem, format)
        self.status.value = f"wrote <code>{html.escape(str(path))}</code>"
        return path

    def _on_click(self, _: Any) -> None:
        self.status.value = "exporting …"
        try:
            self.export()
        except Exception as exc:  # shown in the page instead of a hidden widget log
            self.status.value = f"<span style='color:#b00020'>export failed: {html.escape(str(exc))}</span>"
