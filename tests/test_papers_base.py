"""The shared reproduction layer (ntkbench.papers._base, the paper-figure pieces of
ntkbench.plots, the controls and live figure of ntkbench.widgets), exercised through a
tiny paper module written from the skeleton in ntkbench.papers' docstring: reproduce
runs it end to end, its Workbench redraws in place, its RerunPanel runs one sweep."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from ntkbench import plots
from ntkbench.papers import _base
from ntkbench.papers._base import FigureSpec
from ntkbench.widgets import Control, seed_control, step_control

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

MEASURES = ["eigenvalues", "entropy", "trace", "loss", "test_loss"]


def _config(widths=(4, 16), seeds=(0, 1), steps=12):
    return {
        "title": "toy paper",
        "paper": "toy",
        "seed": 0,
        "model": {"name": "mlp", "width": 4, "depth": 1},
        "data": {"name": "digits", "n_train": 48, "n_test": 16, "seed": 0},
        "train": {"optimizer": "sgd", "lr": 0.05, "steps": steps, "batch_size": 16, "loss": "ce"},
        "record": {"every": "log", "log_points": 5, "probe": 12, "measures": MEASURES},
        "grid": {"width": list(widths), "seed": list(seeds)},
    }


def _toy_paper() -> types.ModuleType:
    """A paper module following the plug-in protocol, as the skeleton shows."""
    mod = types.ModuleType("toy_paper")
    mod.KEY, mod.TITLE = "toy", "A toy paper"
    mod.CONFIGS = {"quick": {"main": _config()}, "test": {"main": _config()}}

    def run_cubes(out, config="quick", **kw):
        cfgs = _base.pick_config(mod.CONFIGS, config) if isinstance(config, str) else config
        return _base.run_experiments(out, cfgs, **kw)

    def fig_1_data(ds, *, seed="mean", step=None):
        key = "f1-main"
        data = {
            "header": f"<b>F-1</b> entropy; seeds: {seed}",
            "panels": [[key]],
            "legend": [key],
            "scales": {key: [True, False]},
            "titles": {key: f"entropy ({seed})"},
            "x_labels": {key: "step + 1"},
            "y_labels": {key: plots.label(ds, "entropy")},
            "spans": {f"{key}-marker": None if step is None else step + 1},
        }
        lines, bands = plots.empty_lines(), plots.empty_bands()
        x = np.asarray(ds["step"].values, float) + 1.0
        for w in ds["width"].values:
            traces = plots.seed_traces(ds["entropy"].sel(width=w), plots.seed_mode(seed, ds))
            plots.add_series(lines, bands, x, traces, "#1f5fa8", f"width {int(w)}")
        data["sources"] = {f"{key}-lines": lines, f"{key}-bands": bands}
        return data

    def build_1(data):
        def draw(fig, key):
            plots.lines_and_bands(fig, data, key, legend=key in data["legend"])
            plots.step_marker(fig, f"{key}-marker", data["spans"][f"{key}-marker"])
            plots.panel_style(fig, legend=key in data["legend"])

        return plots.panel_grid(data, draw, panel_size=(420, 300), name="F-1")

    mod.fig_1_data, mod.build_1 = fig_1_data, build_1
    mod.FIGURES = [
        FigureSpec(
            "F-1", lambda c, s: fig_1_data(c["main"], seed=s["seed"], step=s["step"]), build_1, [["seed"], ["step"]]
        )
    ]
    mod.controls = lambda cubes: [
        seed_control(cubes["main"]["seed"].values),
        step_control(cubes["main"]["step"].values),
    ]
    mod.summarize = lambda cubes: {"final_entropy": float(cubes["main"]["entropy"].isel(step=-1).mean())}
    mod.format_summary = lambda summary: f"final entropy {summary['final_entropy']:.3f}\n"
    mod.run_cubes = run_cubes
    return mod


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    paper = _toy_paper()
    cubes = _base.reproduce(paper, out, "quick", formats=("html",), progress=False)
    return paper, out, cubes


def test_reproduce_writes_every_cube_figure_and_summary(toy_run):
    from ntkbench import cube

    paper, out, cubes = toy_run
    assert list(cubes) == ["main"] and cubes["main"].attrs["experiment"] == "main"
    assert cubes["main"]["eigenvalues"].dims[-2:] == ("step", "eigen_index")
    back = cube.open_many(out / "toy.nc")
    assert list(back) == ["main"]
    np.testing.assert_allclose(back["main"]["entropy"], cubes["main"]["entropy"])
    assert (out / "figures" / "toy-F-1.html").stat().st_size > 100_000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"] == "quick" and summary["run_wall_seconds"] >= 0
    ref = float(cubes["main"]["entropy"].isel(step=-1).mean())
    assert summary["final_entropy"] == pytest.approx(ref)
    assert (out / "summary.txt").read_text() == f"final entropy {ref:.3f}\n"
    # rerunning resumes: no run file is rewritten
    before = {p: p.stat().st_mtime_ns for p in (out / "runs-main").glob("run-*.nc")}
    _base.reproduce(paper, out, "quick", formats=(), progress=False)
    assert before == {p: p.stat().st_mtime_ns for p in (out / "runs-main").glob("run-*.nc")}


def test_experiments_sharing_a_folder_rerun_on_their_own_output(tmp_path, trains_nothing):
    """Two experiments in one run folder, the second's grid a superset of the first's (as
    collective's ``mlp`` and ``scale``): the first run trains the union once; a second
    run trains nothing, succeeds and leaves every cube as it was. (One ``cube.nc`` per
    folder held the last experiment's grid, and the rerun's first experiment refused it.)"""
    import xarray as xr

    from ntkbench import cube

    small, big = _config(widths=(4,), seeds=(0,), steps=4), _config(widths=(4, 8), seeds=(0, 1), steps=4)
    cfgs = {"small": small, "big": big}
    first = _base.run_experiments(tmp_path, cfgs, folder=lambda name: "runs-shared", progress=False)
    files = sorted(p.name for p in (tmp_path / "runs-shared").iterdir())
    assert files == ["cube-big.nc", "cube-small.nc", *sorted(p.name for p in (tmp_path / "runs-shared").glob("run-*"))]
    assert len(list((tmp_path / "runs-shared").glob("run-*.nc"))) == 4  # the union of the grids, once each
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs-shared").glob("run-*.nc")}
    trains_nothing()
    again = _base.run_experiments(tmp_path, cfgs, folder=lambda name: "runs-shared", progress=False)
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "runs-shared").glob("run-*.nc")}
    for name in cfgs:
        xr.testing.assert_identical(again[name].drop_attrs(), first[name].drop_attrs())
        xr.testing.assert_identical(cube.open(tmp_path / f"{name}.nc").drop_attrs(), first[name].drop_attrs())
        assert cube.open(tmp_path / "runs-shared" / f"cube-{name}.nc").sizes == first[name].sizes


def test_a_folder_of_another_paper_is_refused(toy_run, tmp_path):
    """Two papers in one --out would share summary.json: the second is refused before it
    runs anything, naming the first; the toy paper's own folder reruns."""
    paper, out, _ = toy_run
    assert json.loads((out / "summary.json").read_text())["paper"] == "toy"
    other = tmp_path / "other"
    other.mkdir()
    (other / "collective.nc").write_bytes(b"")
    with pytest.raises(ValueError, match=r"out: .* holds the reproduction of paper 'collective'"):
        _base.reproduce(paper, other, "quick", formats=(), progress=False)
    assert sorted(p.name for p in other.iterdir()) == ["collective.nc"]  # nothing ran
    (other / "collective.nc").unlink()
    (other / "summary.json").write_text(json.dumps({"paper": "reach"}))
    with pytest.raises(ValueError, match="'reach'"):
        _base.reproduce(paper, other, "quick", formats=(), progress=False)


def test_workbench_redraws_in_place_and_matches_a_fresh_build(toy_run, tmp_path):
    from bokeh.models import Div, Span

    paper, _, cubes = toy_run
    wb = _base.Workbench(cubes, paper.FIGURES, paper.controls(cubes), figures_dir=tmp_path, name="toy")
    fig, model = wb.figures["F-1"], wb.models["F-1"]
    src = fig.select_one({"name": "f1-main-lines"})
    assert len(src.data["xs"]) == 2  # one line per width, mean over seeds
    steps = [int(s) for s in cubes["main"]["step"].values]
    wb.step.value = steps[2]
    assert fig.select_one({"type": Span}).location == steps[2] + 1
    wb.seed.value = "all"
    assert wb.figures["F-1"] is fig and wb.models["F-1"] is model and model._model is fig
    assert fig.select_one({"name": "f1-main-lines"}) is src and len(src.data["xs"]) == 4
    fresh = paper.build_1(paper.fig_1_data(cubes["main"], seed="all", step=steps[2]))
    assert dict(src.data) == dict(fresh.select_one({"name": "f1-main-lines"}).data)
    assert (
        fig.select_one({"type": Div}).text == fresh.select_one({"type": Div}).text == "<b>F-1</b> entropy; seeds: all"
    )
    assert wb.export("F-1", "html") == tmp_path / "toy-F-1.html"
    with pytest.raises(AttributeError, match="no attribute or control"):
        _ = wb.nonexistent
    with pytest.raises(ValueError, match="unknown controls"):
        _base.Workbench(cubes, paper.FIGURES, [seed_control([0, 1])])


def test_live_figure_rebuilds_only_when_the_layout_changes(toy_run):
    from ntkbench.widgets import LiveFigure

    paper, _, cubes = toy_run
    data = paper.fig_1_data(cubes["main"])
    live = LiveFigure(paper.build_1, data)
    fig, model = live.figure, live.model
    sent = []
    model.send = lambda content, buffers=None: sent.append(str(content))
    live.update(paper.fig_1_data(cubes["main"], seed=1))
    assert live.figure is fig and sent, "an in-place change reaches the page"
    sent.clear()
    live.update(paper.fig_1_data(cubes["main"], seed=1))
    assert sent == [], "applying the same data sends nothing"
    other = dict(paper.fig_1_data(cubes["main"]), layout="another")
    live.update(other)
    assert live.figure is not fig and live.model is not model and model.comm is None
    assert live.view.children == (live.model,)
    live.close()
    assert live.view.children == ()


def test_every_experiment_must_record_the_spectrum(tmp_path):
    cfg = _config()
    cfg["record"]["measures"] = ["entropy", "trace"]
    with pytest.raises(ValueError, match=r"configs\['main'\]\['record'\]\['measures'\] must include 'eigenvalues'"):
        _base.run_experiments(tmp_path / "out", {"main": cfg}, progress=False)
    assert not (tmp_path / "out").exists()
    # kernel-free (LNP terms on the training batch, no spectral measure) is allowed; a
    # spectral measure there still needs the spectrum
    cfg["record"].update(measures=["loss", "chi_loss", "chi_net"], lnp_batch="train")
    _base.run_experiments(tmp_path / "free", {"main": cfg}, progress=False)
    cfg["record"]["measures"] = ["loss", "chi_net", "entropy"]
    with pytest.raises(ValueError, match="kernel-free"):
        _base.run_experiments(tmp_path / "out", {"main": cfg}, progress=False)


def test_apply_names_what_a_figure_lacks(toy_run):
    paper, _, cubes = toy_run
    fig = paper.build_1(paper.fig_1_data(cubes["main"]))
    with pytest.raises(ValueError, match="no source named 'nope'"):
        plots.apply(fig, {"sources": {"nope": {}}})


def test_generic_rerun_panel_refuses_a_second_click_and_escapes_errors(tmp_path):
    def config(settings):
        widths = [int(v) for v in str(settings["widths"]).split(",")]
        return _config(widths=widths, seeds=(0,), steps=int(settings["steps"]))

    panel = _base.RerunPanel(
        config,
        [Control("widths", "text", "4"), Control("steps", "int", 6, bounds=(1, 100))],
        tmp_path / "rerun",
        show=lambda cube: __import__("ipywidgets").HTML(str(dict(cube.sizes))),
    )
    assert panel.start() is True
    assert panel.start() is False and "in progress" in panel.status.value
    cube = panel.run(timeout=240)
    assert cube.sizes["width"] == 1 and panel.output.children and panel.status.value == "done"
    shown, progress = panel.output.children[0], panel.panel_box.children[0]
    panel.widths.value = "<script>"
    assert panel.start() is False and "&lt;script&gt;" in panel.status.value
    with pytest.raises(ValueError, match="invalid literal"):  # the setting's own error, plain text
        panel.run(timeout=60)
    # a second run closes what the first one showed (nothing stays open in the kernel)
    panel.widths.value = "4"
    panel.run(timeout=240)
    assert shown.comm is None and progress.comm is None and panel.output.children[0] is not shown


def test_control_kinds_make_their_widgets():
    import ipywidgets as w

    made = {
        "dropdown": Control("a", "dropdown", 2, [1, 2]).widget(),
        "toggle": Control("b", "toggle", "x", [("X", "x"), ("Y", "y")], button_width="50px").widget(),
        "checkbox": Control("c", "checkbox", True).widget(),
        "slider": step_control([0, 5, 10], 5).widget(),
        "multiple": Control("d", "multiple", ("p",), ["p", "q"]).widget(),
        "int": Control("e", "int", 3, bounds=(1, 9)).widget(),
    }
    kinds = {
        "dropdown": w.Dropdown,
        "toggle": w.ToggleButtons,
        "checkbox": w.Checkbox,
        "slider": w.SelectionSlider,
        "multiple": w.SelectMultiple,
        "int": w.BoundedIntText,
    }
    for kind, widget in made.items():
        assert isinstance(widget, kinds[kind]), kind
    assert made["slider"].value == 5 and made["multiple"].value == ("p",) and made["int"].max == 9
    with pytest.raises(ValueError, match="kind"):
        Control("z", "knob", 1)


def test_color_range_and_heatmap_cells():
    assert plots.color_range([np.nan, -0.3, 0.1], symmetric=True) == (-0.3, 0.3)
    assert plots.color_range([0.0, 10.0, 100.0], log=True) == (10.0, 100.0)
    assert plots.color_range([]) == (0.0, 1.0)
    cells = plots.heatmap_cells(
        np.array([[1.0, 2.0], [np.nan, 4000.0]]), [8, 16], [1, 2], x_name="width", y_name="depth", low=1.0, high=4000.0
    )
    assert cells["width_label"] == ["8", "16", "8", "16"] and cells["depth"] == [1, 1, 2, 2]
    assert cells["text"] == ["1.00", "2.00", "", "4k"] and np.isnan(cells["value"][2])
    assert cells["text_color"][0] == "white" and cells["text_color"][3] == "#222222"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_diverged_runs_are_left_out_of_figures_and_summary(toy_run, tmp_path):
    """A run marked diverged (status variable, NaN from its divergence on, blown-up
    values before) is left out of the figures and the summary's mean, and the summary
    and the Workbench say which run."""
    from ntkbench import cube

    paper, _, cubes = toy_run
    bad = cubes["main"].copy(deep=True)
    status = np.zeros((bad.sizes["width"], bad.sizes["seed"]), np.int8)
    step = np.full(status.shape, -1, np.int64)
    status[1, 1], step[1, 1] = cube.DIVERGED, int(bad["step"].values[2])
    bad["status"] = (("width", "seed"), status, cube.var_attrs("status"))
    bad["diverged_step"] = (("width", "seed"), step, cube.var_attrs("diverged_step"))
    ent = bad["entropy"].transpose("width", "seed", "step").values
    ent[1, 1, 2:] = np.nan
    ent[1, 1, :2] *= 1e9
    bad["entropy"] = (("width", "seed", "step"), ent, bad["entropy"].attrs)

    other = _toy_paper()
    other.run_cubes = lambda out, config, **kw: {"main": bad}
    _base.reproduce(other, tmp_path, "quick", formats=(), progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    finished = np.delete(ent[:, :, -1].ravel(), 3)  # (width 16, seed 1) is index 3
    assert summary["final_entropy"] == pytest.approx(float(finished.mean()))
    run = f"width=16, seed=1 (step {step[1, 1]})"
    assert summary["diverged_runs_left_out"] == {"main": [run]}
    assert (
        f"1 diverged run left out of every figure, mean and fit (main: {run})" in (tmp_path / "summary.txt").read_text()
    )

    wb = _base.Workbench({"main": bad}, other.FIGURES, other.controls({"main": bad}), figures_dir=tmp_path / "f")
    assert "1 diverged run left out" in wb.status.value
    lines = plots.figure_index(wb.figures["F-1"])["sources"]["f1-main-lines"].data
    np.testing.assert_allclose(lines["ys"][1], ent[1, 0], rtol=1e-6)  # width 16: seed 0's alone
    wb.close()


def test_paper_gives_a_module_the_protocol_wrappers(toy_run, tmp_path, monkeypatch):
    """_base.Paper(name): configs, run_cubes, run, open_cubes, defaults, figures,
    export_figures and the Workbench class, reading the module's names when called."""
    from ntkbench import cube

    paper, out, cubes = toy_run
    monkeypatch.setattr(paper, "__name__", "toy_paper")
    monkeypatch.setitem(sys.modules, "toy_paper", paper)
    wrappers = _base.Paper("toy_paper", needs=("main",))
    assert wrappers.configs("test") == paper.CONFIGS["test"] and wrappers.configs("test") is not paper.CONFIGS["test"]
    with pytest.raises(ValueError, match="config name must be one of"):
        wrappers.configs("nope")
    monkeypatch.setattr(paper, "configs", wrappers.configs, raising=False)
    again = wrappers.run_cubes(out, "quick", progress=False)  # resumes: every run is there
    assert again["main"].equals(cubes["main"])
    assert set(wrappers.open_cubes(out / "toy.nc")) == {"main"}
    settings = wrappers.defaults(cube.finished_many(cubes))
    assert settings["step"] is None and settings["seed"] == "mean"
    monkeypatch.setattr(paper, "defaults", wrappers.defaults, raising=False)
    assert set(wrappers.figures(cubes)) == {"F-1"}
    assert wrappers.export_figures(cubes, tmp_path, formats=("html",)) == [tmp_path / "toy-F-1.html"]
    Workbench = wrappers.workbench("A toy.")
    assert Workbench.__name__ == "Workbench" and Workbench.__module__ == "toy_paper" and "A toy." in Workbench.__doc__
    wb = Workbench(cubes, figures_dir=tmp_path)
    assert isinstance(wb, _base.Workbench) and list(wb.figures) == ["F-1"]
    wb.close()
    with pytest.raises(ValueError, match="cubes must hold an 'main' cube"):
        Workbench({"other": cubes["main"]})


def test_shared_helpers_of_figure_data_controls_and_summaries():
    from ntkbench.testing import synthetic_cube

    ds = synthetic_cube((16, 64), (0, 1), (0, 10), 4)
    ds.attrs["config"] = json.dumps({"record": {"probe": 32}, "data": {"name": "digits"}})
    assert _base.probe_note(ds, "traced eNTK") == "traced eNTK, probe N = 32 train + 32 test, digits"
    ds.attrs["config"] = "{}"
    assert _base.probe_note(ds, "traced eNTK") == "traced eNTK"

    ctl = _base.dim_control(ds, "width", "toggle", lambda w: f"width {w}", button_width="90px")
    assert (ctl.name, ctl.kind, ctl.value) == ("width", "toggle", 16)
    assert ctl.options == [("width 16", 16), ("width 64", 64)] and type(ctl.value) is int
    assert _base.dim_control(ds, "seed").options == [0, 1]

    base = {"grid": {"width": [1]}, "train": {"steps": 3}}
    cfg = _base.with_grid(base, {"width": [4, 8]})
    cfg["train"]["steps"] = 5
    assert cfg["grid"] == {"width": [4, 8]} and base == {"grid": {"width": [1]}, "train": {"steps": 3}}

    one_seed = ds.sel(seed=[0])
    cubes = {"a": ds, "b": one_seed}
    assert _base.seed_fallbacks(cubes, ("a", "b", "c"), "mean") == []
    assert _base.seed_fallbacks(cubes, ("a", "b", "c"), 1, "mean") == ["b"]
    with pytest.raises(ValueError, match=r"one of \[0\] \(b cube\), got 1"):
        _base.seed_fallbacks(cubes, ("a", "b"), 1)
    with pytest.raises(ValueError, match="missing_seed"):
        _base.seed_fallbacks(cubes, ("a",), 0, "skip")
    assert _base.seed_text(1, fallback=["b"]) == "seed 1 (b: mean ± std, seed 1 not run)"

    change = _base.change_numbers(np.array([0.5, np.nan, -0.25]))
    assert change == {"per_seed": [0.5, None, -0.25], "mean": None, "n_fell": 1, "n_rose": 1, "n_seeds": 3}
    assert _base.change_numbers(0.125)["per_seed"] == [0.125]
    assert _base.majority(change, "fell", "rose") == "mixed"
    assert _base.majority({"n_fell": 0, "n_rose": 2, "n_seeds": 3}, "fell", "rose") == "rose"
