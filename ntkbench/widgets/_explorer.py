"""The cube explorer: spectrum, measure vs step and measure vs width, redrawn in place."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ntkbench import plots
from ntkbench.widgets._common import Shown, flow
from ntkbench.widgets._figures import ExportControl

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
