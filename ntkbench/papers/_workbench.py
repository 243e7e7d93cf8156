"""The notebook side of a paper: :class:`Workbench` (its figures with their controls,
redrawn in place) and :class:`RerunPanel` (rerun an experiment with chosen settings, one
run at a time). Re-exported from :mod:`ntkbench.papers._base`."""

from __future__ import annotations

import html
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ntkbench import cube as cube_mod
from ntkbench.widgets import Shown, join_run

if TYPE_CHECKING:
    from ntkbench.papers._base import FigureSpec

__all__ = ["Workbench", "RerunPanel", "result_view"]

Cubes = Mapping[str, Any]


def _error_html(exc: BaseException) -> str:
    return f"<span style='color:#b00020'>{html.escape(f'{type(exc).__name__}: {exc}')}</span>"


class _Controls:
    """Controls as attributes: ``obj.seed`` is the ipywidget of control ``seed``."""

    controls: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        controls = self.__dict__.get("controls", {})
        if name in controls:
            return controls[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute or control {name!r}")

    def settings(self) -> dict[str, Any]:
        """``{control name: current value}``."""
        return {name: ctl.value for name, ctl in self.controls.items()}

    def _rows(self, rows: Sequence[Sequence[str]]) -> Any:
        from ntkbench.widgets import flow

        return [flow([self.controls[n] for n in row]) if len(row) > 1 else self.controls[row[0]] for row in rows]


class Workbench(_Controls):
    """A paper's figures with their controls in a notebook, redrawn in place.

    ``cubes``: ``{experiment: cube}``; ``specs``: the paper's :class:`FigureSpec` list;
    ``controls``: its :class:`ntkbench.widgets.Control` list (their ipywidgets are the
    attributes of the same names, e.g. ``wb.seed``). Each figure is a
    :class:`ntkbench.widgets.LiveFigure`: a change of a control listed in a spec's
    ``controls`` applies the spec's new figure data to the figure shown (new columns,
    titles, labels, colour ranges, header), or rebuilds it when its layout changes.

    Attributes: ``live`` (name -> LiveFigure), ``figures`` / ``models`` / ``views`` (name
    -> Bokeh layout / BokehModel / ipywidgets Box), ``exporter`` (the export control;
    ``export_box`` is its widget), ``status`` (an error of the last redraw, if any).

    Not run as a doctest: it shows in a notebook; the paper's tests drive its controls.

    >>> wb = Workbench(cubes, FIGURES, controls(cubes), name="collective")  # doctest: +SKIP
    >>> wb.view("F-b1")                                                   # doctest: +SKIP
    """

    def __init__(
        self,
        cubes: Cubes,
        specs: Sequence[FigureSpec],
        controls: Sequence[Any],
        *,
        figures_dir: str | os.PathLike[str] = "figures",
        name: str = "figure",
    ):
        import ipywidgets as w

        from ntkbench.widgets import ExportControl, LiveFigure

        self.controls = {c.name: c.widget() for c in controls}
        self.control_specs = list(controls)
        self.left_out = cube_mod.diverged_runs(cubes)
        self.cubes = cube_mod.finished_many(cubes)
        self.specs = {s.name: s for s in specs if s.available(self.cubes)}
        if not self.specs:
            raise ValueError(f"cubes {sorted(self.cubes)} can draw none of the figures {[s.name for s in specs]}")
        for spec in self.specs.values():
            unknown = [n for n in spec.control_names if n not in self.controls]
            if unknown:
                raise ValueError(
                    f"figure {spec.name!r} uses unknown controls {unknown}; controls are {list(self.controls)}"
                )
        self.figures_dir = Path(figures_dir)
        self.status = w.HTML(value=html.escape(cube_mod.left_out_note(self.left_out)) if self.left_out else "")
        settings = self.settings()
        self.live = {n: LiveFigure(s.build, s.data(self.cubes, settings)) for n, s in self.specs.items()}
        for cname, ctl in self.controls.items():
            names = [n for n, s in self.specs.items() if cname in s.control_names]
            if names:
                ctl.observe(lambda _, names=tuple(names): self.update(*names), "value")
        # exports are built from the figure data shown, at their natural size (the figures
        # shown scale with the notebook's width: LiveFigure)
        self.exporter = ExportControl(
            _FreshFigures(self.live),
            self.figures_dir,
            name=name,
            show_name=False,
            interactive=self.standalone,
        )
        self.export_figure, self.export_format = self.exporter.figure, self.exporter.format
        self.export_button, self.export_status = self.exporter.button, self.exporter.status
        self.export_box = self.exporter.widget

    @property
    def figures(self) -> dict[str, Any]:
        return {n: live.figure for n, live in self.live.items()}

    @property
    def models(self) -> dict[str, Any]:
        return {n: live.model for n, live in self.live.items()}

    @property
    def views(self) -> dict[str, Any]:
        return {n: live.view for n, live in self.live.items()}

    def update(self, *names: str) -> None:
        """Redraw ``names`` (default: all) at the current settings. Every figure is
        redrawn even if one fails; the first error is shown in ``status`` and raised."""
        settings = self.settings()
        self.status.value = html.escape(cube_mod.left_out_note(self.left_out)) + "<br>" if self.left_out else ""
        first: Exception | None = None
        for name in names or tuple(self.live):
            try:
                self.live[name].update(self.specs[name].data(self.cubes, settings))
            except Exception as exc:
                self.status.value += _error_html(exc) + "<br>"
                first = first or exc
        if first is not None:
            raise first

    def view(self, name: str) -> Any:
        """The figure ``name`` under the controls it reacts to."""
        import ipywidgets as w

        if name not in self.live:
            raise ValueError(f"name must be one of {list(self.live)}, got {name!r}")
        return w.VBox([*self._rows(self.specs[name].controls), self.status, self.live[name].view])

    def export(self, figure: str | None = None, format: str | None = None) -> Path:
        """Write one figure as shown (current settings) as ``figures_dir/<name>-<figure>``."""
        return self.exporter.export(figure, format)

    def standalone(self, name: str) -> Any:
        """Figure ``name`` at the current settings for a plain browser: hover tools and its
        step slider, dropdowns, toggles and checkboxes (:func:`ntkbench.standalone.paper_layout`);
        ``export(name, "interactive")`` writes it as ``<paper>-<name>-interactive.html``."""
        from ntkbench import standalone

        if name not in self.specs:
            raise ValueError(f"name must be one of {list(self.specs)}, got {name!r}")
        return standalone.paper_layout(self.specs[name], self.cubes, self.settings(), self.control_specs)

    def close(self) -> None:
        """Close every figure's model."""
        for live in self.live.values():
            live.close()


class _FreshFigures(Mapping[str, Any]):
    """``{name: a new Bokeh layout of what LiveFigure ``name`` shows}``, built on access
    (an export at the figure's natural size; the one shown scales with the notebook)."""

    def __init__(self, live: Mapping[str, Any]):
        self._live = live

    def __getitem__(self, name: str) -> Any:
        live = self._live[name]
        return live.build(live.data)

    def __iter__(self):
        return iter(self._live)

    def __len__(self) -> int:
        return len(self._live)


class RerunPanel(_Controls, Shown):
    """Rerun an experiment with chosen settings, one run at a time, with a progress bar.

    ``config(settings)`` turns the control values into a sweep config (raising
    ``ValueError``/``TypeError`` naming a bad setting); ``controls`` are the
    :class:`ntkbench.widgets.Control`\\ s (attributes of the same names), laid out in
    ``layout`` (rows of names; default one per row); ``show(cube)`` returns a widget shown
    under the panel when the run is done (e.g. a figure of the result).

    One Run button. The run is a live :class:`ntkbench.widgets.RunPanel` (its Explorer
    fills in as the runs record, with a Stop button; in-process
    :func:`ntkbench.sweep` in a background thread, writing under ``out``, resumable;
    settings that changed since the last run replace its run files: ``overwrite``); a
    click while a run is in progress is refused with a message, and errors are shown
    HTML-escaped in ``status``.
    """

    def __init__(
        self,
        config: Callable[[Mapping[str, Any]], dict[str, Any]],
        controls: Sequence[Any],
        out: str | os.PathLike[str],
        *,
        layout: Sequence[Sequence[str]] | None = None,
        show: Callable[[Any], Any] | None = None,
    ):
        import ipywidgets as w

        self.controls = {c.name: c.widget() for c in controls}
        self._config = config
        self._show = show
        self.out = Path(out)
        self.button = w.Button(description="Run", icon="play", button_style="success")
        self.status = w.HTML(value="")
        self.panel_box = w.Box()
        self.output = w.Box()
        self.panel: Any = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.refused: BaseException | None = None  # the setting error of the last refused start
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.button.on_click(lambda _: self.start())
        rows = self._rows(layout if layout is not None else [[n] for n in self.controls])
        from ntkbench.widgets import flow

        self.widget = w.VBox([*rows, flow([self.button, self.status]), self.panel_box, self.output])

    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self._thread is not None and self._thread.is_alive()

    def config(self) -> dict[str, Any]:
        """The sweep config of the current settings."""
        return self._config(self.settings())

    def start(self) -> bool:
        """Start a run with the current settings in the background (the Run button).
        Returns False (and says why in ``status``) if a run is in progress or a setting is
        invalid."""
        from ntkbench.widgets import RunPanel

        with self._lock:
            if self.running:
                self.status.value = "a run is in progress: wait for it to finish (its progress is below)"
                return False
            self.refused = None
            try:
                from ntkbench.sweep import check_runs, expand_grid

                cfg = self.config()
                check_runs(expand_grid(cfg))  # data sizes, options, model vs data: refused here, not in the thread
                # live: the run's Explorer appears at its first recording and fills in (Stop
                # stops after the current recording); new settings replace the last run
                panel = RunPanel(cfg, self.out, overwrite=True)
            except (ValueError, TypeError) as exc:
                self.refused, self.error = exc, None
                self.status.value = _error_html(exc)
                return False
            self.panel, self.error, self.result = panel, None, None
            _close_children(self.panel_box)
            _close_children(self.output)
            self.panel_box.children = (panel.stop_button, panel.progress, panel.status, panel.output)
            self.status.value = "running …"
            self.button.disabled = True
            panel.start()
            self._thread = threading.Thread(target=self._finish, args=(panel,), daemon=True, name="ntkbench-rerun")
            self._thread.start()
            return True

    def _finish(self, panel: Any) -> None:
        try:
            cube = panel.run()
            if cube is None:  # stopped: the panel says how far it got
                self.status.value = "stopped (Run again resumes)"
                return
            self.result = cube
            if self._show is not None:
                self.output.children = (self._show(cube),)
            self.status.value = "done"
        except BaseException as exc:  # noqa: BLE001 - shown in the panel
            self.error = exc
            self.status.value = _error_html(exc)
        finally:
            self.button.disabled = False

    def run(self, timeout: float | None = None) -> Any:
        """Run with the current settings (or wait for the run in progress) and return the
        cube; raises the run's error, or the error of a setting that kept it from starting."""
        if not self.running and not self.start() and self.refused is not None:
            raise self.refused
        return join_run(self, timeout)


def _close_children(box: Any) -> None:
    """Close what a box shows (a finished run's progress widgets, a result figure's
    BokehModel) before it shows something new, so nothing stays open in the kernel."""
    from ntkbench.widgets import LiveFigure

    for child in box.children:
        if hasattr(child, "_document") and hasattr(child, "_model"):  # a jupyter_bokeh BokehModel
            LiveFigure._close_model(child)
        else:
            child.close()
    box.children = ()


def result_view(cube: Any, dims: Sequence[str], name: str, draw: Callable[[Any], Any]) -> Any:
    """What a paper's :class:`RerunPanel` shows of a finished run: the layout ``draw(cube)``
    of figure ``name``, fitted to the output area, if the cube has every one of ``dims``;
    else a line saying that a cube with its dims has no such figure."""
    import ipywidgets as w
    from jupyter_bokeh import BokehModel

    from ntkbench import plots

    if set(dims) <= set(cube.dims):
        return BokehModel(plots.fit_width(draw(cube)))
    return w.HTML(f"no {name} for a cube with dims {html.escape(str(tuple(cube.dims)))}")
