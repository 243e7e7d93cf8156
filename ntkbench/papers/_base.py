"""The reproduction layer every paper module is written against.

A paper is configs → sweep → cubes → figure data → figures → summary → export:

- **configs**: ``{config name: {experiment: sweep config}}`` (``quick``, ``test``,
  ``full``); :func:`pick_config` copies one out.
- **sweep → cubes**: :func:`run_experiments` runs each experiment through
  :func:`ntkbench.sweep` (resumable, in-process or on dask) into ``out/<folder>`` and
  returns ``{experiment: cube}``; :func:`ntkbench.cube.save_many` /
  :func:`ntkbench.cube.open_many` keep all of a paper's cubes in one file.
- **figures**: one :class:`FigureSpec` per figure: ``data(cubes, settings)`` returns the
  figure data (every column, title, axis label, header and colour range that depends on
  the settings; see ``ntkbench.plots``, "paper figures") and ``build(data)`` draws it
  without reading a cube. ``settings`` are the values of the paper's controls
  (:class:`ntkbench.widgets.Control`), so the CLI, the notebook and the export draw the
  same figure from the same settings.
- **summary**: the paper's ``summarize(cubes)`` (numbers as a JSON-able dict) and
  ``format_summary(summary)`` (text).
- :func:`reproduce` chains all of it for ``ntkbench reproduce PAPER``; :class:`Workbench`
  shows the figures with their controls in a notebook and redraws them in place;
  :class:`RerunPanel` reruns an experiment with chosen settings, one run at a time.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import html
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ntkbench.widgets import Shown, join_run

__all__ = [
    "FigureSpec",
    "pick_config",
    "run_experiments",
    "settings_of",
    "figures",
    "export_figures",
    "reproduce",
    "Workbench",
    "RerunPanel",
    "ranks",
    "rank_correlation",
    "check_choice",
    "need_cube",
    "diverged_runs",
    "left_out_note",
    "finished_cubes",
    "config_of",
    "at_step",
]

Cubes = Mapping[str, Any]
FigureData = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """One figure of a paper.

    ``name``: the paper's figure id (``"F-b1"``). ``data(cubes, settings)``: the figure
    data at these settings (``settings`` maps control names to values). ``build(data)``:
    the Bokeh layout of that figure data. ``controls``: rows of control names shown above
    the figure in a :class:`Workbench`; the figure redraws when one of them changes.
    ``available(cubes)``: whether the cubes can draw it (e.g. an optional experiment).
    """

    name: str
    data: Callable[[Cubes, Mapping[str, Any]], FigureData]
    build: Callable[[FigureData], Any]
    controls: Sequence[Sequence[str]] = ()
    available: Callable[[Cubes], bool] = lambda cubes: True

    @property
    def control_names(self) -> list[str]:
        return [name for row in self.controls for name in row]

    def figure(self, cubes: Cubes, settings: Mapping[str, Any]) -> Any:
        """The Bokeh layout at ``settings``: ``build(data(cubes, settings))``."""
        return self.build(self.data(cubes, settings))


def pick_config(table: Mapping[str, Mapping[str, Any]], name: str) -> dict[str, Any]:
    """A deep copy of ``table[name]``; ``ValueError`` naming the known names otherwise."""
    if name not in table:
        raise ValueError(f"config name must be one of {sorted(table)}, got {name!r}")
    return copy.deepcopy(dict(table[name]))


def run_experiments(
    out: str | os.PathLike[str],
    configs: Mapping[str, Mapping[str, Any]],
    *,
    folder: Callable[[str], str] = lambda name: f"runs-{name}",
    rename: Mapping[str, str] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Sweep every experiment of ``configs`` (``{experiment: sweep config}``) under ``out``
    and return ``{experiment: cube}``.

    Experiment ``name`` runs in ``out/<folder(name)>`` (experiments that share a folder
    share their grid points: each runs once; each combines its own ``cube-<name>.nc``
    there) and its cube is saved as ``out/<name>.nc``,
    with the attribute ``experiment``. Every experiment must record ``eigenvalues`` (the
    probe set's spectrum; ``ValueError`` before anything runs otherwise). ``rename``
    renames dims in every cube (e.g.
    ``{"layers": "depth"}``), with the new dim's CF attributes. Rerunning resumes.
    """
    from ntkbench import cube as cube_mod
    from ntkbench.sweep import sweep

    for name, cfg in configs.items():
        measures = cfg.get("record", {}).get("measures")
        if measures is not None and "eigenvalues" not in measures:
            raise ValueError(
                f"configs[{name!r}]['record']['measures'] must include 'eigenvalues': every paper cube records "
                f"the probe set's eNTK spectrum (got {list(measures)})"
            )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sharing = collections.Counter(folder(name) for name in configs)
    cubes: dict[str, Any] = {}
    for name, cfg in configs.items():
        # A shared folder holds one combined cube per experiment: one cube.nc would hold the
        # last experiment's grid, and the next rerun of the first would refuse it.
        combined = f"cube-{name}.nc" if sharing[folder(name)] > 1 else "cube.nc"
        ds = sweep(
            dict(cfg),
            out / folder(name),
            workers=workers,
            scheduler=scheduler,
            client=client,
            progress=progress,
            combined=combined,
        )
        for old, new in (rename or {}).items():
            if old in ds.dims:
                ds = ds.rename({old: new})
                ds[new].attrs.update(cube_mod.var_attrs(new))
        ds.attrs["experiment"] = name
        cube_mod.save(ds, out / f"{name}.nc")
        cubes[name] = ds
    return cubes


def settings_of(controls: Sequence[Any]) -> dict[str, Any]:
    """``{name: default value}`` of a list of :class:`ntkbench.widgets.Control`."""
    return {c.name: c.value for c in controls}


def figures(specs: Sequence[FigureSpec], cubes: Cubes, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``{figure name: Bokeh layout}`` of every available spec at ``settings``."""
    return {s.name: s.figure(cubes, settings) for s in specs if s.available(cubes)}


def export_figures(
    figs: Mapping[str, Any],
    folder: str | os.PathLike[str],
    prefix: str,
    formats: Sequence[str] = ("png", "svg", "html"),
) -> list[Path]:
    """Write each figure as ``folder/<prefix>-<name>.<format>``; return the paths."""
    from ntkbench import plots

    return [plots.export(fig, Path(folder) / f"{prefix}-{name}", fmt) for name, fig in figs.items() for fmt in formats]


def reproduce(
    paper: ModuleType,
    out: str | os.PathLike[str],
    config: str | Mapping[str, Mapping[str, Any]] | None = None,
    *,
    quick: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    formats: Sequence[str] = ("png", "svg", "html"),
    progress: bool = True,
) -> dict[str, Any]:
    """Run a paper end to end and return ``{experiment: cube}``.

    ``config`` is a config name of the paper or a dict of sweep configs; None picks
    ``"quick"`` with ``quick``, else ``"full"`` (what ``ntkbench reproduce [--quick]`` runs).

    ``paper`` is a paper module (see ``ntkbench.papers``): its ``run_cubes(out, config,
    ...)`` runs the experiments, then this writes ``out/<KEY>.nc`` (every cube,
    :func:`ntkbench.cube.save_many`), the figures at the paper's ``defaults(cubes)`` (else
    its controls' defaults) as
    ``out/figures/<KEY>-<figure>.<format>``, and ``out/summary.json`` / ``summary.txt``
    (``summarize`` / ``format_summary``, with the config name and the run's wall time).
    """
    from ntkbench import cube as cube_mod

    if config is None:
        config = "quick" if quick else "full"
    _check_out_of_this_paper(Path(out), paper.KEY)
    t0 = time.perf_counter()
    cubes = paper.run_cubes(out, config, workers=workers, scheduler=scheduler, progress=progress)
    wall = time.perf_counter() - t0
    out = Path(out)
    cube_mod.save_many(cubes, out / f"{paper.KEY}.nc")
    shown = finished_cubes(cubes)  # diverged runs left out of every figure, mean and fit
    settings = paper.defaults(shown) if hasattr(paper, "defaults") else settings_of(paper.controls(shown))
    figs = figures(paper.FIGURES, shown, settings)
    export_figures(figs, out / "figures", paper.KEY, formats)
    summary = paper.summarize(shown)
    summary["paper"] = paper.KEY
    summary["config"] = config if isinstance(config, str) else "custom"
    summary["run_wall_seconds"] = round(wall, 1)
    text = paper.format_summary(summary)
    left_out = diverged_runs(cubes)
    if left_out:
        summary["diverged_runs_left_out"] = left_out
        text += f"\n{left_out_note(left_out)}\n"
    _write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    _write_text(out / "summary.txt", text)
    return cubes


def _check_out_of_this_paper(out: Path, key: str) -> None:
    """Refuse an ``out`` that holds another paper's reproduction: the two would share
    ``summary.json`` / ``summary.txt`` (the second run replaces the first's). Recognised by
    another registered paper's ``<KEY>.nc``, or a summary naming another paper."""
    from ntkbench.papers import REGISTRY

    if not out.is_dir():
        return
    others = [k for k in REGISTRY if k != key and (out / f"{k}.nc").exists()]
    try:
        named = json.loads((out / "summary.json").read_text()).get("paper")
    except (OSError, ValueError, AttributeError):
        named = None
    if named not in (None, key) and named not in others:
        others.append(str(named))
    if others:
        raise ValueError(
            f"out: {str(out)!r} holds the reproduction of paper {others[0]!r} ({others[0]}.nc, summary.json); "
            f"reproducing {key!r} there would replace its summary. Use another out folder for each paper"
        )


def diverged_runs(cubes: Cubes) -> dict[str, list[str]]:
    """``{experiment: ["width=64, seed=1 (step 30)", ...]}`` of the runs whose training
    diverged (the cube's ``status`` variable); experiments without any are absent."""
    import numpy as np

    from ntkbench import cube

    out: dict[str, list[str]] = {}
    for name, ds in cubes.items():
        bad = cube.diverged(ds)
        if not bool(bad.any()):
            continue
        flat = bad.stack(run=list(bad.dims)) if bad.dims else bad.expand_dims(run=[0])
        steps = ds["diverged_step"].stack(run=list(bad.dims)) if bad.dims else None
        runs = []
        for k in np.flatnonzero(flat.values):
            point = ", ".join(f"{d}={flat[d].values[k]}" for d in bad.dims)
            at = f" (step {int(steps.values[k])})" if steps is not None else ""
            runs.append(f"{point}{at}".strip())
        out[str(name)] = runs
    return out


def left_out_note(left_out: Mapping[str, Sequence[str]]) -> str:
    """One line saying which diverged runs every figure, mean and fit leaves out."""
    n = sum(len(v) for v in left_out.values())
    runs = "; ".join(f"{exp}: {', '.join(v)}" for exp, v in left_out.items())
    return f"{n} diverged run{'s' if n != 1 else ''} left out of every figure, mean and fit ({runs})"


def finished_cubes(cubes: Cubes) -> dict[str, Any]:
    """Each cube with its diverged runs' values set to NaN (:func:`ntkbench.cube.finished`):
    the papers' means over seeds, fits and summaries leave them out."""
    from ntkbench import cube

    return {k: cube.finished(v) for k, v in cubes.items()}


def check_choice(name: str, value: Any, table: Mapping[str, Any] | Sequence[Any]) -> None:
    """``ValueError`` naming setting ``name`` unless ``value`` is one of ``table``'s keys
    (or items)."""
    if value not in table:
        raise ValueError(f"{name} must be one of {list(table)}, got {value!r}")


def need_cube(cubes: Cubes, exp: str) -> Any:
    """``cubes[exp]``; ``ValueError`` naming the experiment and the cubes there otherwise."""
    if exp not in cubes:
        raise ValueError(f"this figure needs the {exp!r} cube; cubes are {sorted(cubes)}")
    return cubes[exp]


def config_of(ds: Any) -> dict[str, Any]:
    """The sweep config a cube's ``config`` attribute holds (``{}`` if it holds none)."""
    try:
        return dict(json.loads(ds.attrs.get("config", "{}")))
    except (TypeError, ValueError):
        return {}


def at_step(da: Any, step: int | None) -> Any:
    """``da`` at the recorded step nearest ``step`` (None: the last recorded step)."""
    import numpy as np

    if step is None:
        return da.isel(step=-1)
    steps = da["step"].values
    return da.sel(step=steps[np.abs(steps - step).argmin()])


def ranks(a: Any) -> Any:
    """Ranks 0 … n-1 of a 1-D array, ties sharing their average rank.

    >>> ranks([3.0, 1.0, 3.0]).tolist()
    [1.5, 0.0, 1.5]
    """
    import numpy as np

    a = np.asarray(a, dtype=float)
    order = np.argsort(a, kind="mergesort")
    r = np.empty(len(a))
    r[order] = np.arange(len(a))
    _, inverse = np.unique(a, return_inverse=True)
    return (np.bincount(inverse, r) / np.bincount(inverse))[inverse]


def rank_correlation(
    x: Any, y: Any, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0, groups: Any = None
) -> dict[str, Any]:
    """Spearman's rank correlation of ``x`` and ``y`` with a percentile bootstrap interval.

    ``groups`` (optional, same length): ranks are taken within each group (e.g. each data
    budget) and pooled, so a correlation that only reflects the group sizes does not count.
    Resampling is over pairs (within each group when grouped), ``n_boot`` times with a fixed
    ``seed``. NaN pairs are dropped. Returns ``{"rho", "low", "high", "n", "resolved"}``,
    ``resolved`` when the interval excludes 0 (``rho`` NaN below 3 pairs).

    >>> r = rank_correlation([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5])
    >>> round(r["rho"], 3), r["resolved"]  # six pairs: the interval still holds 0
    (0.829, False)
    """
    import numpy as np

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    g = np.zeros(len(x)) if groups is None else np.asarray(groups)
    if not (len(x) == len(y) == len(g)):
        raise ValueError(f"x, y and groups must have the same length, got {len(x)}, {len(y)}, {len(g)}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, g = x[ok], y[ok], g[ok]
    members = [np.flatnonzero(g == v) for v in np.unique(g)]

    def rho(idx_per_group: list) -> float:
        rx = np.concatenate([ranks(x[i]) - (len(i) - 1) / 2 for i in idx_per_group])
        ry = np.concatenate([ranks(y[i]) - (len(i) - 1) / 2 for i in idx_per_group])
        den = np.sqrt((rx**2).sum() * (ry**2).sum())
        return float((rx * ry).sum() / den) if den > 0 else float("nan")

    out: dict[str, Any] = {
        "rho": float("nan"),
        "low": float("nan"),
        "high": float("nan"),
        "n": int(len(x)),
        "resolved": False,
    }
    if len(x) < 3:
        return out
    out["rho"] = rho(members)
    rng = np.random.default_rng(seed)
    boots = np.array([rho([i[rng.integers(0, len(i), len(i))] for i in members]) for _ in range(n_boot)])
    boots = boots[np.isfinite(boots)]
    if boots.size:
        alpha = (1 - level) / 2
        out["low"], out["high"] = (float(v) for v in np.quantile(boots, [alpha, 1 - alpha]))
        out["resolved"] = bool(out["low"] > 0 or out["high"] < 0)
    return out


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
        self.left_out = diverged_runs(cubes)
        self.cubes = finished_cubes(cubes)
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
        self.status = w.HTML(value=html.escape(left_out_note(self.left_out)) if self.left_out else "")
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
        self.status.value = html.escape(left_out_note(self.left_out)) + "<br>" if self.left_out else ""
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
