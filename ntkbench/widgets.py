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
"""

from __future__ import annotations

import dataclasses
import html
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ntkbench import plots

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
]


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


#
# Used by Explorer and by every paper's Workbench / RerunPanel (ntkbench.papers._base).


_SOURCE_NAMES = {
    "spectrum": ("lines", "points"),
    "measure": ("lines", "bands", "points", "diverged", "diverged_end"),
    "scaling": ("points", "seeds", "errors", "fit"),
}


class Explorer(Shown):
    """Interactive view of a result cube: spectrum, measure vs step, measure vs width.

    Parameters
    ----------
    ds : a result cube (``xarray.Dataset``) with a ``step`` dim; ``width``, ``seed`` and
        ``eigenvalues`` are optional (figures that need them are left out).
    measure : the measure shown first (default ``entropy`` if recorded).
    figures_dir : where the export control writes (relative to the current directory).

    Attributes
    ----------
    widths, step, play, eigen_range, measure, spectrum_scale, step_scale, measure_scale,
    seed : the controls (``ipywidgets``); set ``.value`` to drive the explorer.
    exporter : the export control (:class:`ExportControl`); ``export_figure``,
        ``export_format``, ``export_name``, ``export_button``, ``export_status`` are its
        widgets.
    figures : ``{"spectrum" | "measure" | "scaling": bokeh figure}``.
    sources : ``{figure name: {source name: ColumnDataSource}}``.
    models : ``{figure name: jupyter_bokeh.BokehModel}``.
    widget : the whole layout (displayed when the explorer is the cell's value).
    """

    def __init__(self, ds: Any, *, measure: str | None = None, figures_dir: str | Path = "figures"):
        import ipywidgets as w
        from jupyter_bokeh import BokehModel

        plots.check_cube(ds)
        if "step" not in ds.dims:
            raise ValueError(f"ds must have a 'step' dim, it has {tuple(ds.dims)}")
        self.ds = ds
        self._draw_lock = threading.RLock()
        self.figures_dir = Path(figures_dir)
        ms = plots.measures(ds)
        if not ms and "eigenvalues" not in ds:
            raise ValueError("ds has neither eigenvalues nor per-step measures to explore")
        if measure is None and ms:
            measure = "entropy" if "entropy" in ms else ms[0]
        if measure is not None and measure not in ms:
            raise ValueError(f"measure must be one of {ms}, got {measure!r}")
        steps = [int(s) for s in ds["step"].values]
        has_width = "width" in ds.dims
        widths = [int(v) for v in ds["width"].values] if has_width else []
        seeds = [int(v) for v in ds["seed"].values] if "seed" in ds.dims else []
        n_eigen = int(ds.sizes.get("eigen_index", 1))

        # --- controls
        self.widths = w.SelectMultiple(
            options=[(str(v), v) for v in widths],
            value=tuple(widths),
            description="width",
            rows=min(max(len(widths), 2), 6),
            disabled=not has_width,
            layout=w.Layout(width="180px"),
        )
        self.step = w.SelectionSlider(
            options=[(str(s), s) for s in steps],
            value=steps[0],
            description="step",
            continuous_update=True,
            layout=w.Layout(width="420px"),
        )
        self.play = w.Play(
            min=0,
            max=len(steps) - 1,
            value=0,
            interval=500,
            description="play",
            show_repeat=False,
            layout=w.Layout(width="110px"),
        )
        w.jslink((self.play, "value"), (self.step, "index"))
        self.eigen_range = w.IntRangeSlider(
            min=0,
            max=max(n_eigen - 1, 0),
            value=(0, max(n_eigen - 1, 0)),
            description="eigen_index",
            continuous_update=True,
            disabled="eigenvalues" not in ds,
            layout=w.Layout(width="420px"),
        )
        self.measure = w.Dropdown(options=ms, value=measure, description="measure", disabled=not ms)
        toggle = dict(options=["log", "linear"], style={"button_width": "62px", "description_width": "initial"})
        self.spectrum_scale = w.ToggleButtons(value="log", description="spectrum", **toggle)
        self.step_scale = w.ToggleButtons(value="linear", description="step axis", **toggle)
        self.measure_scale = w.ToggleButtons(
            value="log" if measure and "loss" in measure else "linear", description="measure axis", **toggle
        )
        self.seed = w.Dropdown(
            options=[("mean ± std", "mean")] + [(f"seed {s}", s) for s in seeds],
            value="mean",
            description="seed",
            disabled=not seeds,
        )

        # --- figures (built once; afterwards only their sources change)
        self.figures: dict[str, Any] = {}
        if "eigenvalues" in ds:
            self.figures["spectrum"] = plots.spectrum_plot(ds, **self._spectrum_kw())
        if measure is not None:
            self.figures["measure"] = plots.measure_plot(
                ds, measure, **self._measure_kw(), step_marker=self.step.value, width=520, height=380
            )
        if measure is not None and has_width and len(widths) >= 2:
            self.figures["scaling"] = plots.scaling_plot(ds, measure, **self._scaling_kw())
        self.sources = {
            name: {s: fig.select_one({"name": s}) for s in _SOURCE_NAMES[name]} for name, fig in self.figures.items()
        }
        self.exporter = ExportControl(
            self.figures,
            self.figures_dir,
            name="ntkbench",
            interactive=lambda _: self.standalone(),
            interactive_name="explorer",
        )
        self.export_figure, self.export_format = self.exporter.figure, self.exporter.format
        self.export_name, self.export_button = self.exporter.name, self.exporter.button
        self.export_status = self.exporter.status
        self.models = {name: BokehModel(fig) for name, fig in self.figures.items()}

        # --- wiring
        self.widths.observe(self._on_widths, "value")
        self.step.observe(self._on_step, "value")
        self.eigen_range.observe(lambda _: self._redraw("spectrum"), "value")
        self.measure.observe(self._on_measure, "value")
        self.spectrum_scale.observe(self._on_spectrum_scale, "value")
        self.step_scale.observe(self._on_measure_scale, "value")
        self.measure_scale.observe(self._on_measure_scale, "value")
        self.seed.observe(lambda _: self._redraw(*self.figures), "value")

        # --- layout: a control only for what the cube has (no width selector for a cube
        # without widths, no seed selector without seeds, ...); rows wrap in a narrow window
        has = {
            "widths": has_width,
            "seed": bool(seeds),
            "eigen_range": "eigenvalues" in ds,
            "spectrum_scale": "eigenvalues" in ds,
            "measure": bool(ms),
            "step_scale": "measure" in self.figures,
            "measure_scale": "measure" in self.figures,
        }
        shown = lambda *names: [getattr(self, n) for n in names if has.get(n, True)]  # noqa: E731
        controls = w.VBox(
            [
                flow([self.play, self.step]),
                *shown("eigen_range"),
                flow(shown("measure", "seed")),
                flow(shown("spectrum_scale", "step_scale", "measure_scale")),
            ],
            layout=w.Layout(flex="1 1 420px", min_width="0"),
        )
        top = flow([*shown("widths"), controls])
        self.widget = w.VBox([top, flow(list(self.models.values())), self.exporter.widget])

    # ------------------------------------------------------------------ selections

    def _selected_widths(self) -> list[int] | None:
        return list(self.widths.value) if "width" in self.ds.dims else None

    def _spectrum_kw(self) -> dict[str, Any]:
        return dict(
            width=self._selected_widths(),
            step=int(self.step.value),
            seed=self.seed.value,
            eigen_range=tuple(self.eigen_range.value),
            by="width",
            log=self.spectrum_scale.value == "log",
        )

    def _measure_kw(self) -> dict[str, Any]:
        return dict(
            widths=self._selected_widths(),
            seed=self.seed.value,
            log_x=self.step_scale.value == "log",
            log_y=self.measure_scale.value == "log",
        )

    def _scaling_kw(self) -> dict[str, Any]:
        return dict(step=int(self.step.value), widths=self._selected_widths(), seed=self.seed.value)

    # ------------------------------------------------------------------ redraw

    def set_data(self, ds: Any) -> None:
        """Show ``ds`` in place (more of a live sweep: the same grid, steps and measures);
        every figure redraws, the controls keep their values, nothing is re-displayed."""
        plots.check_cube(ds)
        if dict(ds.sizes) != dict(self.ds.sizes):
            raise ValueError(f"ds must have the explorer's dims {dict(self.ds.sizes)}, got {dict(ds.sizes)}")
        with self._draw_lock:
            self.ds = ds
            self._redraw(*self.figures)

    def _redraw(self, *names: str) -> None:
        with self._draw_lock:  # a live run's updates and the controls redraw from two threads
            self._redraw_now(*names)

    def _redraw_now(self, *names: str) -> None:
        for name in names:
            fig = self.figures.get(name)
            if fig is None:
                continue
            if name == "spectrum":
                data = plots.spectrum_data(self.ds, **self._spectrum_kw())
                fig.title.text = f"eNTK spectrum at step {int(self.step.value)}"
            elif name == "measure":
                data = plots.measure_data(self.ds, str(self.measure.value), **self._measure_kw())
            else:
                ws = self._selected_widths() or []
                if len(ws) == 0:
                    data = {k: {c: [] for c in src.data} for k, src in self.sources["scaling"].items()}
                else:
                    data = plots.scaling_data(self.ds, str(self.measure.value), **self._scaling_kw())
                long_name = self.ds[self.measure.value].attrs.get("long_name", self.measure.value)
                fig.title.text = f"{long_name} at step {int(self.step.value)}"
            plots.update(fig, data)
            plots.place_legend(fig, redraw=True)  # the legend follows the data to a free corner

    def _on_widths(self, _: Any) -> None:
        self._redraw(*self.figures)

    def _on_step(self, _: Any) -> None:
        if "measure" in self.figures:
            self.figures["measure"].select_one({"name": "step_marker"}).location = float(self.step.value)
        self._redraw("spectrum", "scaling")

    def _on_measure(self, _: Any) -> None:
        name = str(self.measure.value)
        for key in ("measure", "scaling"):
            fig = self.figures.get(key)
            if fig is None:
                continue
            fig.yaxis[0].axis_label = plots.label(self.ds, name)
            if key == "measure":
                fig.title.text = str(self.ds[name].attrs.get("long_name", name))
        self._redraw("measure", "scaling")

    def _on_spectrum_scale(self, _: Any) -> None:
        if "spectrum" in self.figures:
            log = self.spectrum_scale.value == "log"
            plots.set_log(self.figures["spectrum"], x=log, y=log)
            self._redraw("spectrum")

    def _on_measure_scale(self, _: Any) -> None:
        if "measure" in self.figures:
            plots.set_log(
                self.figures["measure"], x=self.step_scale.value == "log", y=self.measure_scale.value == "log"
            )
            self._redraw("measure")

    # ------------------------------------------------------------------ export

    def export(self, figure: str | None = None, format: str | None = None, name: str | None = None) -> Path:
        """Write a figure under ``figures_dir`` (defaults: the export control's values;
        see :class:`ExportControl`). Returns the written path, also shown in
        ``export_status``. ``format="interactive"`` writes the whole explorer as one
        standalone interactive HTML file, ``<name>-explorer.html`` (:meth:`standalone`)."""
        return self.exporter.export(figure, format, name)

    def standalone(self) -> Any:
        """This explorer, at its current settings, as a Bokeh layout whose controls work in
        a plain browser (:func:`ntkbench.standalone.explorer_layout`); write it with
        :func:`ntkbench.standalone.write_html` or ``export(format="interactive")``."""
        from ntkbench import standalone

        return standalone.explorer_layout(self)


class RunPanel(Shown):
    """Launch a quick sweep from a notebook, with a progress bar; open the result in an
    :class:`Explorer` when it is done.

    Runs :func:`ntkbench.sweep.sweep` on ``config`` (a sweep config dict, see
    ``ntkbench.sweep``) in a background thread, in-process, writing run files under
    ``out``; the progress bar counts finished run files, so a rerun with the same ``out``
    resumes. ``runner`` replaces the sweep (``runner(config, out) -> cube``), e.g. for
    tests. With ``explore`` (default) an :class:`Explorer` on the result appears under
    the progress bar. A folder holding runs of another config is refused (the error shows
    in the panel) unless ``overwrite`` (then those runs are recomputed; see
    :func:`ntkbench.sweep.sweep`).

    Live (default, with ``explore``): the sweep runs with ``live=True`` and the Explorer
    appears at the first recording, on the sweep's full grid and record schedule, then
    fills in place every ``poll`` seconds as runs record (:func:`ntkbench.sweep.live_cube`);
    Stop asks every run in progress to stop after its current recording (finished runs
    stay; Run again resumes).

    Attributes
    ----------
    button, stop_button, progress, status, output : the widgets; ``result`` (the cube) and
    ``explorer`` (from the first recording when live, else once done); ``error`` (the
    exception) if the run failed; ``updates``: how many live updates the Explorer got.

    Example
    -------
    Not run as a doctest (a notebook widget that trains; tests/test_widgets.py and
    tests/test_live.py run it):

    >>> panel = RunPanel(config, out="runs/quick")   # doctest: +SKIP
    >>> panel                                        # click "Run" (or panel.run())  # doctest: +SKIP
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        out: str | Path = "runs/quick",
        *,
        runner: Callable[[Mapping[str, Any], Path], Any] | None = None,
        explore: bool = True,
        poll: float = 0.2,
        overwrite: bool = False,
        live: bool = True,
    ):
        import ipywidgets as w

        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict (a sweep config), got {type(config).__name__}")
        self.config = dict(config)
        self.out = Path(out)
        self.poll = float(poll)
        self.explore = bool(explore)
        self.overwrite = bool(overwrite)
        self.live = bool(live) and self.explore and runner is None
        self.updates = 0
        self._runner = runner
        self._files = self._run_files()
        n = max(len(self._files), 1)
        title = str(self.config.get("title", "")) or "quick run"
        self.button = w.Button(description="Run", icon="play", button_style="success")
        self.progress = w.IntProgress(value=0, min=0, max=n, description="runs", bar_style="info")
        self.status = w.HTML(
            value=f"{html.escape(title)}: {n} run{'s' if n != 1 else ''} → <code>{html.escape(str(self.out))}</code>"
        )
        self.output = w.Output()
        self.result: Any = None
        self.explorer: Explorer | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._running = False
        self.stop_button = w.Button(
            description="Stop", icon="stop", disabled=True, tooltip="stop after the current recording"
        )
        self.button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.widget = w.VBox([flow([self.button, self.stop_button, self.progress]), self.status, self.output])

    def _run_files(self) -> list[Path]:
        if self._runner is not None:
            return []
        from ntkbench.sweep import expand_grid, run_name

        return [self.out / run_name(r["grid"]) for r in expand_grid(self.config)]

    def _count(self) -> int:
        return sum(p.exists() for p in self._files)

    def _work(self) -> None:
        t0 = time.perf_counter()
        try:
            if self._runner is not None:
                self.result = self._runner(self.config, self.out)
            else:
                from ntkbench.sweep import sweep

                self.result = sweep(self.config, self.out, progress=False, overwrite=self.overwrite, live=self.live)
        except BaseException as exc:  # noqa: BLE001 - reported in the panel
            from ntkbench.sweep import SweepInterrupted

            with self._lock:
                self._running = False
            if isinstance(exc, SweepInterrupted):  # Stop: not a failure
                self._show_live()
                self.progress.bar_style = "warning"
                self.status.value = f"{html.escape(str(exc))} (click Run)"
                return
            self.error = exc
            self.progress.bar_style = "danger"
            self.status.value = f"<span style='color:#b00020'>run failed: {html.escape(repr(exc))}</span>"
            self.output.append_stderr("".join(traceback.format_exception(exc)))
            return
        finally:
            self.button.disabled = False
            self.stop_button.disabled = True
        with self._lock:
            self._running = False
        self.progress.value = self.progress.max
        self.progress.bar_style = "success"
        self.status.value = f"done in {time.perf_counter() - t0:.1f} s → <code>{html.escape(str(self.out))}</code>"
        if self.explore:
            if self.explorer is not None and dict(self.explorer.ds.sizes) == dict(self.result.sizes):
                self.explorer.set_data(self.result)  # the live explorer, in place
            else:
                self._show_explorer(self.result)

    def _show_explorer(self, ds: Any) -> None:
        self.explorer = Explorer(ds)
        # set the Output's outputs directly: works from this thread, unlike `with output:`
        bundle = self.explorer.widget._repr_mimebundle_()
        self.output.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)

    def _show_live(self) -> None:
        """Show the sweep so far: the Explorer at the first recording, then in place."""
        from ntkbench.sweep import live_cube

        ds = live_cube(self.config, self.out)
        if ds is None:
            return
        with self._lock:
            if self.explorer is None:
                self._show_explorer(ds)
            elif dict(self.explorer.ds.sizes) == dict(ds.sizes):
                self.explorer.set_data(ds)
            self.updates += 1

    def stop(self) -> None:
        """Ask the run to stop after the current recording of each run in progress (the
        Stop button); finished runs stay and Run resumes."""
        from ntkbench.sweep import request_stop

        if self._thread is not None and self._thread.is_alive() and self.live:
            request_stop(self.out)
            self.status.value = "stopping after the current recording …"

    def start(self) -> None:
        """Start the run in a background thread (the button's action); returns at once."""
        if self._thread is not None and self._thread.is_alive():
            return
        self.error = None
        self.button.disabled = True
        self.progress.value = self._count()
        self.progress.bar_style = "info"
        self.status.value = "running …"
        self.output.outputs = ()
        self.explorer = None
        self.stop_button.disabled = not self.live
        self._running = True
        self._thread = threading.Thread(target=self._work, name="ntkbench-runpanel", daemon=True)
        self._thread.start()
        threading.Thread(target=self._watch, name="ntkbench-runpanel-progress", daemon=True).start()

    def _watch(self) -> None:
        while self._thread is not None and self._thread.is_alive():
            n = min(self._count(), self.progress.max)
            with self._lock:
                if not self._running:
                    return
                self.progress.value = n
            if self.live:
                try:
                    self._show_live()
                except Exception as exc:  # noqa: BLE001 - a live view error must not stop the run
                    self.status.value = f"running … (live view: {html.escape(repr(exc))})"
            time.sleep(self.poll)

    def run(self, timeout: float | None = None) -> Any:
        """Start (if needed) and wait for the run; return the cube or raise its error."""
        if self._thread is None or (not self._thread.is_alive() and self.result is None and self.error is None):
            self.start()
        return join_run(self, timeout)


# =========================================================================== shared pieces


@dataclasses.dataclass
class Control:
    """A notebook control described without ipywidgets (so configs, figure defaults and the
    CLI can use it without a notebook); :meth:`widget` makes the ipywidget.

    ``kind``: ``"dropdown"``, ``"toggle"`` (ToggleButtons), ``"checkbox"``, ``"slider"``
    (a SelectionSlider over ``options``), ``"multiple"`` (SelectMultiple), ``"text"``,
    ``"int"`` / ``"float"`` (bounded by ``bounds``). ``options`` are values or
    ``(label, value)`` pairs.

    >>> Control("entropy", "toggle", "S", [("S [nat]", "S"), ("S / ln N", "S/lnN")]).value
    'S'
    """

    name: str
    kind: str
    value: Any
    options: Sequence[Any] = ()
    description: str | None = None
    width: str | None = None
    button_width: str | None = None
    bounds: tuple[float, float] | None = None
    rows: int | None = None

    KINDS = ("dropdown", "toggle", "checkbox", "slider", "multiple", "text", "int", "float")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {self.kind!r}")

    def widget(self) -> Any:
        """A new ipywidget with this control's options and value."""
        import ipywidgets as w

        kw: dict[str, Any] = {"description": self.name if self.description is None else self.description}
        if self.width:
            kw["layout"] = w.Layout(width=self.width)
        if self.kind in ("dropdown", "toggle", "slider", "multiple"):
            kw["options"] = list(self.options)
        if self.kind == "dropdown":
            return w.Dropdown(value=self.value, **kw)
        if self.kind == "toggle":
            style = {"button_width": self.button_width} if self.button_width else {}
            return w.ToggleButtons(value=self.value, style=style, **kw)
        if self.kind == "checkbox":
            return w.Checkbox(value=bool(self.value), **kw)
        if self.kind == "slider":
            return w.SelectionSlider(value=self.value, continuous_update=True, **kw)
        if self.kind == "multiple":
            return w.SelectMultiple(value=tuple(self.value), rows=self.rows or min(max(len(self.options), 2), 6), **kw)
        if self.kind == "text":
            return w.Text(value=str(self.value), **kw)
        lo, hi = self.bounds if self.bounds is not None else (None, None)
        if self.kind == "int":
            return w.BoundedIntText(
                value=int(self.value),
                min=int(lo if lo is not None else 0),
                max=int(hi if hi is not None else 2**31 - 1),
                **kw,
            )
        return w.BoundedFloatText(
            value=float(self.value),
            min=lo if lo is not None else 0.0,
            max=hi if hi is not None else 1e9,
            step=0.01,
            **kw,
        )


def seed_control(
    seeds: Sequence[int],
    *,
    name: str = "seed",
    band: str = "mean ± std",
    every: bool = True,
    description: str = "seeds",
) -> Control:
    """Seed aggregation: ``"mean"`` (``band``), ``"all"`` (every seed, with ``every``) or
    one seed."""
    options: list[tuple[str, Any]] = [(band, "mean")] + ([("every seed", "all")] if every else [])
    options += [(f"seed {int(s)}", int(s)) for s in seeds]
    return Control(name, "dropdown", "mean", options, description=description)


def step_control(
    steps: Sequence[int], value: int | None = None, *, name: str = "step", width: str = "480px"
) -> Control:
    """A step slider over the recorded ``steps`` (default: the first)."""
    steps = [int(s) for s in steps]
    return Control(
        name,
        "slider",
        steps[0] if value is None else int(value),
        [(str(s), s) for s in steps],
        description="step",
        width=width,
    )


def int_list_control(name: str, value: str, *, description: str | None = None) -> Control:
    """A text field for a comma-separated list of integers (widths, depths, seeds); read it
    with :func:`parse_ints`."""
    return Control(name, "text", value, description=description)


def parse_ints(text: str, name: str, *, minimum: int = 1) -> list[int]:
    """The sorted distinct integers of a comma- (or semicolon-) separated ``text``;
    ``ValueError`` naming ``name`` if a value is not an integer or below ``minimum``.

    >>> parse_ints("128, 8; 8", "widths")
    [8, 128]
    """
    try:
        values = [int(t) for t in str(text).replace(";", ",").split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not values or any(v < minimum for v in values):
        kind = "non-negative" if minimum == 0 else "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be comma-separated {kind} integers, got {text!r}")
    return sorted(set(values))


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
