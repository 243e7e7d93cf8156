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
- :func:`reproduce` chains all of it for ``ntkbench reproduce PAPER``; :class:`Paper`
  gives a paper module the protocol's wrappers (``configs``, ``run_cubes``, ``run``,
  ``open_cubes``, ``figures``, ``Workbench``) once for all papers.
- helpers of figure data and summaries: :data:`PROBE_MEASURES`, :func:`check_choice`,
  :func:`need_cube`, :func:`has_cubes`, :func:`config_of`, :func:`at_step`,
  :func:`seed_or_mean`, :func:`seed_fallbacks`, :func:`seed_text`, :func:`add_seed_series`,
  :func:`put_lines`, :func:`line_builder`, :func:`probe_note`, :func:`dim_control`, :func:`with_grid`,
  :func:`summary_head`, :func:`change_numbers`, :func:`majority`; the model behind a cube:
  :func:`n_params`, :func:`tokens_per_step` and the training compute :func:`compute`.

Re-exported here: :class:`Workbench` (the figures with their controls in a notebook,
redrawn in place), :class:`RerunPanel` (rerun an experiment with chosen settings, one
run at a time) and :func:`result_view` from :mod:`ntkbench.papers._workbench`;
:func:`ranks` and :func:`rank_correlation` from :mod:`ntkbench.papers._stats` (the
summaries' statistics); :func:`diverged_runs`, :func:`left_out_note` and
:func:`finished_cubes` from :mod:`ntkbench.cube` (the diverged-run bookkeeping).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ntkbench import cube as cube_mod
from ntkbench._types import Spread
from ntkbench.papers._stats import finite, rank_correlation, ranks, strict
from ntkbench.papers._workbench import RerunPanel, Workbench, result_view
from ntkbench.plots import FigureData as _FigureData

__all__ = [
    "FigureSpec",
    "Paper",
    "PROBE_MEASURES",
    "pick_config",
    "run_experiments",
    "settings_of",
    "figures",
    "export_figures",
    "reproduce",
    "Workbench",
    "RerunPanel",
    "result_view",
    "ranks",
    "rank_correlation",
    "check_choice",
    "need_cube",
    "has_cubes",
    "diverged_runs",
    "left_out_note",
    "finished_cubes",
    "config_of",
    "at_step",
    "seed_text",
    "put_lines",
    "add_seed_series",
    "summary_head",
    "seed_or_mean",
    "line_builder",
    "n_params",
    "tokens_per_step",
    "compute",
    "seed_fallbacks",
    "change_numbers",
    "majority",
    "probe_note",
    "with_grid",
    "dim_control",
]

Cubes = Mapping[str, Any]

#: what the papers record of their probe's eNTK first: its spectrum (so any spectral
#: measure can be recomputed and the cube opens in ntkbench.widgets.Explorer; every paper
#: records it, :func:`run_experiments`), its entropy and its trace, raw and normalized
PROBE_MEASURES: tuple[str, ...] = ("eigenvalues", "entropy", "entropy_normalized", "trace", "trace_per_sample")
FigureData = _FigureData


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
    probe set's spectrum; ``ValueError`` before anything runs otherwise), unless it is
    kernel-free: no spectral measure, its LNP terms on the training batch (reach's power
    config, whose models are too large for a spectrum at every record). ``rename``
    renames dims in every cube (e.g.
    ``{"layers": "depth"}``), with the new dim's CF attributes. Rerunning resumes.
    """
    from ntkbench.conventions import SPECTRAL
    from ntkbench.sweep import sweep

    for name, cfg in configs.items():
        record = cfg.get("record", {})
        measures = record.get("measures")
        kernel_free = record.get("lnp_batch") == "train" and not SPECTRAL & set(measures or ["eigenvalues"])
        if measures is not None and "eigenvalues" not in measures and not kernel_free:
            raise ValueError(
                f"configs[{name!r}]['record']['measures'] must include 'eigenvalues': every paper cube records "
                f"the probe set's eNTK spectrum, unless it is kernel-free (no spectral measure, the LNP terms on "
                f"the training batch) (got {list(measures)})"
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
    # strict JSON: a non-finite number the paper's summary let through is written as null
    _write_text(out / "summary.json", json.dumps(strict(summary), indent=2, allow_nan=False) + "\n")
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


#: ``{experiment: ["width=64, seed=1 (step 30)", ...]}`` of the diverged runs: ntkbench.cube.diverged_runs
diverged_runs = cube_mod.diverged_runs
#: the line naming the diverged runs every figure, mean and fit leaves out: ntkbench.cube.left_out_note
left_out_note = cube_mod.left_out_note
#: each cube with its diverged runs' values set to NaN: ntkbench.cube.finished_many
finished_cubes = cube_mod.finished_many


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


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def has_cubes(*names: str) -> Callable[[Cubes], bool]:
    """A :class:`FigureSpec` ``available``: whether the cubes hold every one of ``names``."""
    return lambda cubes: all(n in cubes for n in names)


def seed_text(seed: Any, band: str = "mean ± std over seeds", unit: str = "seed", fallback: Sequence[str] = ()) -> str:
    """How a figure's header names its ``seed`` setting: the band of ``"mean"``, every
    ``unit`` for ``"all"``, else the one ``unit`` drawn, and then the experiments of
    ``fallback`` shown as the mean because they lack it (:func:`seed_fallbacks`).

    >>> seed_text("mean"), seed_text("all", unit="repeat"), seed_text(3)
    ('mean ± std over seeds', 'every repeat', 'seed 3')
    >>> seed_text(3, fallback=["cnn"])
    'seed 3 (cnn: mean ± std, seed 3 not run)'
    """
    text = {"mean": band, "all": f"every {unit}"}.get(seed, f"{unit} {seed}")
    return text + (f" ({', '.join(fallback)}: mean ± std, {unit} {seed} not run)" if fallback else "")


def seed_or_mean(cubes: Cubes, exp: str, seed: Any) -> Any:
    """The ``seed`` setting for experiment ``exp``: itself where the cube has that seed
    (or it is ``"mean"`` / ``"all"``, or the cube is absent or has no seeds), else
    ``"mean"`` (a paper's experiments may differ in seeds)."""
    if seed in ("mean", "all") or exp not in cubes or "seed" not in cubes[exp].dims:
        return seed
    return seed if seed in cubes[exp]["seed"].values.tolist() else "mean"


@functools.cache
def _model_info(model_json: str, data_json: str) -> tuple[int, int]:
    """(parameters, sequence length) of the model and data a run config builds (shapes
    only, no random draws)."""
    from ntkbench.data import load
    from ntkbench.models import count_config_params

    data = json.loads(data_json)
    options = {k: v for k, v in data.items() if k not in ("name", "n_train", "n_test", "seed")}
    ds = load(data["name"], 1, 0, seed=0, **options)
    n = count_config_params(json.loads(model_json), in_shape=ds.in_shape, out_size=ds.n_outputs)
    return n, int(ds.in_shape[0]) if ds.task == "next_token" else 1


def _info(ds: Any, width: int) -> tuple[int, int]:
    cfg = config_of(ds)
    model = {**cfg.get("model", {}), "width": int(width)}
    return _model_info(json.dumps(model, sort_keys=True), json.dumps(cfg.get("data", {}), sort_keys=True))


def n_params(ds: Any, width: int) -> int:
    """Parameters of the cube's model at ``width`` (every parameter: embeddings included)."""
    return _info(ds, width)[0]


def tokens_per_step(ds: Any, width: int) -> int:
    """Training tokens per optimizer step: batch size × sequence length."""
    batch = config_of(ds).get("train", {}).get("batch_size", 1)
    return int(batch) * _info(ds, width)[1]


def compute(ds: Any, width: int) -> np.ndarray:
    """Training compute 6·N·D (FLOPs) at every recorded step of width ``width``: N the
    model's parameters, D the tokens seen (step × batch × sequence length)."""
    return 6.0 * n_params(ds, width) * tokens_per_step(ds, width) * np.asarray(ds["step"].values, float)


def put_lines(data: Any, key: str, lines: Any, bands: Any) -> None:
    """Store panel ``key``'s line and band columns as the figure data's sources
    ``"<key>-lines"`` and ``"<key>-bands"``."""
    data["sources"][f"{key}-lines"], data["sources"][f"{key}-bands"] = lines, bands


def add_seed_series(
    lines: Any,
    bands: Any,
    x: Any,
    da: Any,
    seed: Any,
    color: str,
    label: str,
    *,
    spread: Spread = "se",
    log_x: bool = True,
    log_y: bool = True,
) -> None:
    """Add the lines of ``da`` over ``x`` with ``seed`` (``"mean"``: the mean with a band of
    ``spread``, default the standard error; ``"all"``; one seed) to the columns ``lines``
    and ``bands`` (:func:`ntkbench.plots.seed_traces`, :func:`ntkbench.plots.add_series`)."""
    from ntkbench import plots

    traces = plots.seed_traces(da, plots.seed_mode(seed, da), spread=spread)
    plots.add_series(lines, bands, x, traces, color, label, log_x=log_x, log_y=log_y)


def probe_note(ds: Any, kernel_note: str) -> str:
    """A header's note on a cube's probe: ``kernel_note`` (what the kernel is), the probe
    sizes (``probe N = P train + P test``: a train and a test probe of the config's
    ``record.probe``) and the data set's name, those the cube's config holds, comma-separated."""
    cfg = config_of(ds)
    probe, data = cfg.get("record", {}).get("probe"), cfg.get("data", {}).get("name")
    parts = [kernel_note]
    if probe:
        parts.append(f"probe N = {probe} train + {probe} test")
    if data:
        parts.append(str(data))
    return ", ".join(parts)


def with_grid(base: Mapping[str, Any], grid: Mapping[str, list]) -> dict[str, Any]:
    """A deep copy of sweep config ``base`` with the grid ``grid`` (``{axis: values}``)."""
    cfg = copy.deepcopy(dict(base))
    cfg["grid"] = grid
    return cfg


def dim_control(ds: Any, dim: str, kind: str = "dropdown", label: Callable[[Any], str] | None = None, **kw: Any) -> Any:
    """A :class:`ntkbench.widgets.Control` named ``dim`` choosing one value of the cube's
    dim ``dim`` (default the first), each shown as ``label(value)`` (None: the value);
    ``kw`` as for the control (``button_width``, ``description``, ...)."""
    from ntkbench.widgets import Control

    values = ds[dim].values.tolist()
    options = values if label is None else [(label(v), v) for v in values]
    return Control(dim, kind, values[0], options, **kw)


def seed_fallbacks(cubes: Cubes, names: Sequence[str], seed: Any, missing_seed: str = "error") -> list[str]:
    """The experiments of ``names`` in ``cubes`` whose cube lacks the single ``seed`` asked
    for (none for ``"mean"`` / ``"all"``). With ``missing_seed="mean"`` a figure shows them
    as the mean over their own seeds (a paper's experiments may differ in seeds); with
    ``"error"`` a missing seed raises ``ValueError`` naming ``seed`` and the cube."""
    if missing_seed not in ("error", "mean"):
        raise ValueError(f"missing_seed must be 'error' or 'mean', got {missing_seed!r}")
    if seed in ("mean", "all"):
        return []
    present = [a for a in names if a in cubes]
    missing = [a for a in present if "seed" in cubes[a].dims and seed not in cubes[a]["seed"].values.tolist()]
    if missing and missing_seed == "error":
        held = cubes[missing[0]]["seed"].values.tolist()
        raise ValueError(f"seed must be 'mean', 'all' or one of {held} ({missing[0]} cube), got {seed!r}")
    return missing


def change_numbers(delta: Any) -> dict[str, Any]:
    """A measure's change over training as a summary holds it: ``per_seed`` (to 4 decimals,
    None where not finite), ``mean``, ``n_fell`` / ``n_rose`` (seeds where it fell / rose) and
    ``n_seeds``; ``delta`` holds the change per seed (a scalar: one seed).

    >>> change_numbers(np.array([-0.5, 0.25, -0.125]))
    {'per_seed': [-0.5, 0.25, -0.125], 'mean': -0.125, 'n_fell': 2, 'n_rose': 1, 'n_seeds': 3}
    """
    delta = np.atleast_1d(delta)
    return {
        "per_seed": [finite(v) for v in delta],
        "mean": finite(np.mean(delta)),
        "n_fell": int((delta < 0).sum()),
        "n_rose": int((delta > 0).sum()),
        "n_seeds": int(delta.size),
    }


def majority(change: Mapping[str, Any], fell: str, rose: str, neither: str = "mixed") -> str:
    """What most seeds of :func:`change_numbers` did: ``fell`` where more than half fell,
    ``rose`` where more than half rose, else ``neither``.

    >>> majority({"n_fell": 2, "n_rose": 1, "n_seeds": 3}, "compression", "structure formation")
    'compression'
    """
    if change["n_fell"] > change["n_seeds"] / 2:
        return fell
    return rose if change["n_rose"] > change["n_seeds"] / 2 else neither


def line_builder(panel_size: tuple[int, int], doc: str, legend_location: str | None = None) -> Callable[..., Any]:
    """A paper's ``build_lines(data, panel_size=panel_size)``: the layout of figure data of
    lines with bands in each panel (markers where it has spans; legends in
    ``data["legend"]``) by :func:`ntkbench.plots.line_grid`, named ``data["layout"]``."""

    def build_lines(data: Any, panel_size: tuple[int, int] = panel_size) -> Any:
        from ntkbench import plots

        kw = {} if legend_location is None else {"legend_location": legend_location}
        return plots.line_grid(data, panel_size=panel_size, name=str(data["layout"]), **kw)

    build_lines.__doc__ = doc
    return build_lines


class Paper:
    """The plug-in protocol's wrappers of a paper module, written once.

    ``Paper(__name__, ...)`` in a paper module gives the module-level functions every paper
    has: :meth:`configs`, :meth:`run_cubes`, :meth:`run`, :meth:`figures`,
    :meth:`export_figures`, ``open_cubes`` (:func:`ntkbench.cube.open_many`) and
    :meth:`workbench` (the paper's ``Workbench`` class). They read the module's ``KEY``,
    ``CONFIGS``, ``configs``, ``FIGURES``, ``controls`` and ``defaults`` when called, so the
    module may define them after this. ``folder`` / ``rename`` go to
    :func:`run_experiments`; ``needs``: experiments a Workbench cannot do without.
    """

    open_cubes = staticmethod(cube_mod.open_many)

    def __init__(
        self,
        module: str,
        *,
        folder: Callable[[str], str] | None = None,
        rename: Mapping[str, str] | None = None,
        needs: Sequence[str] = (),
    ):
        self.name, self.folder, self.rename, self.needs = module, folder, rename, tuple(needs)

    @property
    def module(self) -> ModuleType:
        return sys.modules[self.name]

    def configs(self, name: str = "quick") -> dict[str, dict[str, Any]]:
        """A deep copy of the paper's sweep configs ``name`` (``"quick"``, ``"test"``, ``"full"``)."""
        return pick_config(self.module.CONFIGS, name)

    def run_cubes(
        self,
        out: str | os.PathLike[str],
        config: str | Mapping[str, Mapping[str, Any]] = "quick",
        *,
        workers: int | None = None,
        scheduler: str | None = None,
        client: Any = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Run the experiments of ``config`` (a name of the paper's ``CONFIGS`` or such a
        dict) under ``out`` (resumable, :func:`run_experiments`) and return ``{experiment: cube}``."""
        cfgs = self.module.configs(config) if isinstance(config, str) else copy.deepcopy(dict(config))
        kw: dict[str, Any] = {} if self.folder is None else {"folder": self.folder}
        return run_experiments(
            out,
            cfgs,
            rename=self.rename,
            workers=workers,
            scheduler=scheduler,
            client=client,
            progress=progress,
            **kw,
        )

    def run(
        self,
        out: str | os.PathLike[str],
        quick: bool = False,
        workers: int | None = None,
        scheduler: str | None = None,
        *,
        config: str | Mapping[str, Mapping[str, Any]] | None = None,
        formats: Sequence[str] = ("png", "svg", "html"),
        progress: bool = True,
    ) -> dict[str, Any]:
        """``ntkbench reproduce <KEY>``: run the experiments, export every figure and the
        summary; return ``{experiment: cube}`` (files as in :func:`reproduce`; ``config``
        overrides ``quick``)."""
        return reproduce(
            self.module,
            out,
            config,
            quick=quick,
            workers=workers,
            scheduler=scheduler,
            formats=formats,
            progress=progress,
        )

    def defaults(self, cubes: Cubes) -> dict[str, Any]:
        """The settings ``reproduce`` draws the figures at: the defaults of the paper's
        ``controls(cubes)``, with no step marker (``step`` None)."""
        return {**settings_of(self.module.controls(cubes)), "step": None}

    def figures(self, cubes: Cubes, **kw: Any) -> dict[str, Any]:
        """``{figure name: Bokeh layout}`` at the paper's ``defaults`` (``kw`` overrides settings)."""
        m = self.module
        return figures(m.FIGURES, cubes, {**m.defaults(cubes), **kw})

    def export_figures(
        self, cubes: Cubes, folder: str | os.PathLike[str], formats: Sequence[str] = ("png", "svg", "html")
    ) -> list[Path]:
        """Export every figure of :meth:`figures` as ``folder/<KEY>-<figure>.<format>``."""
        return export_figures(self.figures(cubes), folder, self.module.KEY, formats)

    def workbench(self, doc: str = "") -> type[Workbench]:
        """The paper's ``Workbench(cubes, *, figures_dir="figures")``: a :class:`Workbench`
        with the module's ``FIGURES`` and ``controls(cubes)``, named ``KEY``; ``doc`` says
        more than the generic docstring."""
        paper, key = self, self.name.rsplit(".", 1)[-1]

        class PaperWorkbench(Workbench):
            def __init__(self, cubes: Cubes, *, figures_dir: str | os.PathLike[str] = "figures"):
                for exp in paper.needs:
                    if exp not in cubes:
                        raise ValueError(f"cubes must hold an {exp!r} cube, got {sorted(cubes)}")
                m = paper.module
                super().__init__(cubes, m.FIGURES, m.controls(cubes), figures_dir=figures_dir, name=m.KEY)

        PaperWorkbench.__name__ = PaperWorkbench.__qualname__ = "Workbench"
        PaperWorkbench.__module__ = self.name
        PaperWorkbench.__doc__ = f"""Notebook controls for the paper's figures, on cubes from ``open_cubes`` (a
    :class:`ntkbench.papers._base.Workbench` with its ``FIGURES`` and ``controls``: each
    control is the attribute of its name, e.g. ``wb.seed``). {doc}

    Not run as a doctest: it shows in a notebook; the paper's tests drive its controls.

    >>> wb = Workbench(open_cubes("../data/{key}_quick.nc"))  # doctest: +SKIP
    >>> wb.view(FIGURES[0].name)                               # doctest: +SKIP
    """
        return PaperWorkbench


def summary_head(title: str, note: str, summary: Mapping[str, Any]) -> list[str]:
    """The first lines of a paper's ``format_summary``: its title, the summary's note and
    the config and wall time of the run (when ``reproduce`` added them)."""
    lines = [title, f"({note})", ""]
    if "run_wall_seconds" in summary:
        lines += [f"config {summary.get('config')}: runs took {summary['run_wall_seconds']} s wall time", ""]
    return lines
