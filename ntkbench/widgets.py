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

import html
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ntkbench import plots

__all__ = ["Explorer", "RunPanel"]

_SOURCE_NAMES = {
    "spectrum": ("lines", "points"),
    "measure": ("lines", "bands", "points"),
    "scaling": ("points", "seeds", "errors", "fit"),
}


class Explorer:
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
    export_figure, export_format, export_name, export_button, export_status : the export
        control.
    figures : ``{"spectrum" | "measure" | "scaling": bokeh figure}``.
    sources : ``{figure name: {source name: ColumnDataSource}}``.
    models : ``{figure name: jupyter_bokeh.BokehModel}``.
    widget : the whole layout (displayed when the explorer is the cell's value).
    """

    def __init__(self, ds: Any, *, measure: str | None = None, figures_dir: str | Path = "figures"):
        import ipywidgets as w
        from jupyter_bokeh import BokehModel

        plots._check_cube(ds)
        if "step" not in ds.dims:
            raise ValueError(f"ds must have a 'step' dim, it has {tuple(ds.dims)}")
        self.ds = ds
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
            min=0, max=len(steps) - 1, value=0, interval=500, description="play", show_repeat=False,
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
        self.export_figure = w.Dropdown(options=[], description="figure", layout=w.Layout(width="200px"))
        self.export_format = w.Dropdown(
            options=[("PNG", "png"), ("SVG", "svg"), ("HTML", "html")], value="png", description="format",
            layout=w.Layout(width="160px"),
        )
        self.export_name = w.Text(value="ntkbench", description="file name", layout=w.Layout(width="240px"))
        self.export_button = w.Button(description="Export", icon="download", button_style="primary")
        self.export_status = w.HTML(value="")

        # --- figures (built once; afterwards only their sources change)
        self.figures: dict[str, Any] = {}
        if "eigenvalues" in ds:
            self.figures["spectrum"] = plots.spectrum_plot(ds, **self._spectrum_kw())
        if ms:
            self.figures["measure"] = plots.measure_plot(
                ds, measure, **self._measure_kw(), step_marker=self.step.value, width=520, height=380
            )
        if ms and has_width and len(widths) >= 2:
            self.figures["scaling"] = plots.scaling_plot(ds, measure, **self._scaling_kw())
        self.sources = {
            name: {s: fig.select_one({"name": s}) for s in _SOURCE_NAMES[name]} for name, fig in self.figures.items()
        }
        self.export_figure.options = list(self.figures)
        self.export_figure.value = next(iter(self.figures))
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
        self.export_button.on_click(self._on_export)

        # --- layout
        controls = w.VBox(
            [
                w.HBox([self.play, self.step]),
                self.eigen_range,
                w.HBox([self.measure, self.seed]),
                w.HBox([self.spectrum_scale, self.step_scale, self.measure_scale]),
            ]
        )
        top = w.HBox([self.widths, controls])
        figs = list(self.models.values())
        rows = [w.HBox(figs[i : i + 2]) for i in range(0, len(figs), 2)]
        export = w.HBox([self.export_figure, self.export_format, self.export_name, self.export_button])
        self.widget = w.VBox([top, *rows, export, self.export_status])

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

    def _redraw(self, *names: str) -> None:
        for name in names:
            fig = self.figures.get(name)
            if fig is None:
                continue
            if name == "spectrum":
                data = plots.spectrum_data(self.ds, **self._spectrum_kw())
                fig.title.text = f"eNTK spectrum at step {int(self.step.value)}"
            elif name == "measure":
                data = plots.measure_data(self.ds, self.measure.value, **self._measure_kw())
            else:
                ws = self._selected_widths() or []
                if len(ws) == 0:
                    data = {k: {c: [] for c in src.data} for k, src in self.sources["scaling"].items()}
                else:
                    data = plots.scaling_data(self.ds, self.measure.value, **self._scaling_kw())
                long_name = self.ds[self.measure.value].attrs.get("long_name", self.measure.value)
                fig.title.text = f"{long_name} at step {int(self.step.value)}"
            plots.update(fig, data)

    def _on_widths(self, _: Any) -> None:
        self._redraw(*self.figures)

    def _on_step(self, _: Any) -> None:
        if "measure" in self.figures:
            self.figures["measure"].select_one({"name": "step_marker"}).location = float(self.step.value)
        self._redraw("spectrum", "scaling")

    def _on_measure(self, _: Any) -> None:
        name = self.measure.value
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
        """Write a figure under ``figures_dir`` (defaults: the export control's values).

        Returns the written path, also shown in ``export_status``.
        """
        figure = figure or self.export_figure.value
        if figure not in self.figures:
            raise ValueError(f"figure must be one of {list(self.figures)}, got {figure!r}")
        format = format or self.export_format.value
        name = (name or self.export_name.value or "ntkbench").strip()
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"name must be a plain file name (no folders), got {name!r}")
        stem = name if name.lower().endswith(f".{format}") else f"{name}-{figure}"
        path = plots.export(self.figures[figure], self.figures_dir / stem, format)
        self.export_status.value = f"wrote <code>{html.escape(str(path))}</code>"
        return path

    def _on_export(self, _: Any) -> None:
        self.export_status.value = "exporting …"
        try:
            self.export()
        except Exception as exc:  # shown in the page instead of a hidden widget log
            self.export_status.value = f"<span style='color:#b00020'>export failed: {html.escape(str(exc))}</span>"

    # ------------------------------------------------------------------ display

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


class RunPanel:
    """Launch a quick sweep from a notebook, with a progress bar; open the result in an
    :class:`Explorer` when it is done.

    Runs :func:`ntkbench.sweep.sweep` on ``config`` (a sweep config dict, see
    ``ntkbench.sweep``) in a background thread, in-process, writing run files under
    ``out``; the progress bar counts finished run files, so a rerun with the same ``out``
    resumes. ``runner`` replaces the sweep (``runner(config, out) -> cube``), e.g. for
    tests. With ``explore`` (default) an :class:`Explorer` on the result appears under
    the progress bar.

    Attributes
    ----------
    button, progress, status, output : the widgets; ``result`` (the cube) and
    ``explorer`` once done; ``error`` (the exception) if the run failed.

    Example
    -------
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
    ):
        import ipywidgets as w

        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict (a sweep config), got {type(config).__name__}")
        self.config = dict(config)
        self.out = Path(out)
        self.poll = float(poll)
        self.explore = bool(explore)
        self._runner = runner
        self._files = self._run_files()
        n = max(len(self._files), 1)
        title = str(self.config.get("title", "")) or "quick run"
        self.button = w.Button(description="Run", icon="play", button_style="success")
        self.progress = w.IntProgress(value=0, min=0, max=n, description="runs", bar_style="info")
        self.status = w.HTML(value=f"{html.escape(title)}: {n} run{'s' if n != 1 else ''} → <code>{html.escape(str(self.out))}</code>")
        self.output = w.Output()
        self.result: Any = None
        self.explorer: Explorer | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._running = False
        self.button.on_click(lambda _: self.start())
        self.widget = w.VBox([w.HBox([self.button, self.progress]), self.status, self.output])

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

                self.result = sweep(self.config, self.out, progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported in the panel
            with self._lock:
                self._running = False
            self.error = exc
            self.progress.bar_style = "danger"
            self.status.value = f"<span style='color:#b00020'>run failed: {html.escape(repr(exc))}</span>"
            self.output.append_stderr("".join(traceback.format_exception(exc)))
            return
        finally:
            self.button.disabled = False
        with self._lock:
            self._running = False
        self.progress.value = self.progress.max
        self.progress.bar_style = "success"
        self.status.value = f"done in {time.perf_counter() - t0:.1f} s → <code>{html.escape(str(self.out))}</code>"
        if self.explore:
            self.explorer = Explorer(self.result)
            # set the Output's outputs directly: works from this thread, unlike `with output:`
            bundle = self.explorer.widget._repr_mimebundle_()
            self.output.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)

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
            time.sleep(self.poll)

    def run(self, timeout: float | None = None) -> Any:
        """Start (if needed) and wait for the run; return the cube or raise its error."""
        if self._thread is None or (not self._thread.is_alive() and self.result is None and self.error is None):
            self.start()
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"run did not finish within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

