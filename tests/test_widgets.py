"""Explorer / RunPanel: every control redraws the Bokeh sources in place with the cube's
values (references computed here with NumPy); export writes under figures/."""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from ntkbench.testing import synthetic_cube
from ntkbench.widgets import Explorer, RunPanel

WIDTHS, SEEDS, STEPS, NE = (16, 64, 256), (0, 1), (0, 10, 100, 1000), 10

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def ds():
    return synthetic_cube(WIDTHS, SEEDS, STEPS, NE, seed=5)


@pytest.fixture
def ex(ds):
    return Explorer(ds)


def _data(ex, fig, src):
    return ex.sources[fig][src].data


def _by_label(lines):
    return {lab: np.asarray(y) for lab, y in zip(lines["label"], lines["ys"], strict=True)}


def test_initial_state_and_in_place_sources(ex, ds):
    assert set(ex.figures) == {"spectrum", "measure", "scaling"}
    assert ex.step.value == STEPS[0] and ex.play.max == len(STEPS) - 1
    assert ex.measure.value == "entropy" and ex.seed.value == "mean"
    spec = _by_label(_data(ex, "spectrum", "lines"))
    ref = ds.eigenvalues.values[:, :, 0, :].mean(1)
    for i, w in enumerate(WIDTHS):
        np.testing.assert_allclose(spec[f"width {w}"], ref[i], rtol=1e-12)
    # the BokehModel shows the very figure whose sources the controls mutate
    for name, model in ex.models.items():
        assert model._model is ex.figures[name]


def test_redraw_and_export_message_traffic(ex, tmp_path, monkeypatch):
    """A control change sends document patches to the page (in-place update, the figure
    object stays); an export sends nothing (the live figure is never touched)."""
    monkeypatch.chdir(tmp_path)
    sent = []
    for model in ex.models.values():
        monkeypatch.setattr(model, "send", lambda content, buffers=None: sent.append(str(content)))
    figs = dict(ex.figures)
    ex.measure.value = "trace"
    assert any("PATCH-DOC" in m or "ModelChanged" in m for m in sent)
    assert ex.figures == figs and all(ex.models[k]._model is figs[k] for k in figs)
    sent.clear()
    ex.export("measure", "html")
    if os.path.exists("/usr/bin/chromium"):
        ex.export("measure", "svg")
        ex.export("measure", "png")
    assert sent == []
    assert ex.figures["measure"].output_backend == "canvas"


def test_step_slider(ex, ds):
    src = ex.sources["spectrum"]["lines"]
    ex.step.value = 100
    assert ex.sources["spectrum"]["lines"] is src  # same source object: updated in place
    j = STEPS.index(100)
    spec = _by_label(src.data)
    ref = ds.eigenvalues.values[:, :, j, :].mean(1)
    for i, w in enumerate(WIDTHS):
        np.testing.assert_allclose(spec[f"width {w}"], ref[i], rtol=1e-12)
    assert ex.figures["measure"].select_one({"name": "step_marker"}).location == 100
    np.testing.assert_allclose(_data(ex, "scaling", "points")["y"], ds.entropy.values[:, :, j].mean(1), rtol=1e-12)
    assert "100" in ex.figures["scaling"].title.text and "100" in ex.figures["spectrum"].title.text


def test_width_selection(ex, ds):
    ex.widths.value = (16, 256)
    assert _data(ex, "spectrum", "lines")["label"] == ["width 16", "width 256"]
    meas = _by_label(_data(ex, "measure", "lines"))
    np.testing.assert_allclose(meas["width 256"], ds.entropy.values[2].mean(0), rtol=1e-12)
    assert _data(ex, "scaling", "points")["x"] == [16.0, 256.0]
    ex.widths.value = ()
    assert _data(ex, "spectrum", "lines")["ys"] == [] and _data(ex, "scaling", "fit")["xs"] == []


def test_eigen_range(ex, ds):
    ex.eigen_range.value = (2, 5)
    pts = _data(ex, "spectrum", "points")
    assert sorted(set(pts["eigen_index"])) == [2, 3, 4, 5]
    spec = _by_label(_data(ex, "spectrum", "lines"))
    np.testing.assert_allclose(spec["width 64"], ds.eigenvalues.values[1, :, 0, 2:6].mean(0), rtol=1e-12)
    np.testing.assert_array_equal(_data(ex, "spectrum", "lines")["xs"][0], [3, 4, 5, 6])


def test_measure_dropdown(ex, ds):
    ex.measure.value = "test_loss"
    meas = _by_label(_data(ex, "measure", "lines"))
    np.testing.assert_allclose(meas["width 16"], ds.test_loss.values[0].mean(0), rtol=1e-12)
    assert ex.figures["measure"].yaxis[0].axis_label.startswith(ds.test_loss.attrs["long_name"])
    assert ex.figures["scaling"].yaxis[0].axis_label.startswith(ds.test_loss.attrs["long_name"])
    np.testing.assert_allclose(_data(ex, "scaling", "points")["y"], ds.test_loss.values[:, :, 0].mean(1), rtol=1e-12)


def test_seed_aggregation(ex, ds):
    assert len(_data(ex, "measure", "bands")["xs"]) == len(WIDTHS)
    ex.seed.value = 1
    assert _data(ex, "measure", "bands")["xs"] == []
    meas = _by_label(_data(ex, "measure", "lines"))
    np.testing.assert_allclose(meas["width 64"], ds.entropy.values[1, SEEDS.index(1)], rtol=1e-12)
    spec = _by_label(_data(ex, "spectrum", "lines"))
    np.testing.assert_allclose(spec["width 16"], ds.eigenvalues.values[0, 1, 0], rtol=1e-12)
    assert _data(ex, "scaling", "seeds")["x"] == []
    ex.seed.value = "mean"
    np.testing.assert_allclose(
        _by_label(_data(ex, "measure", "lines"))["width 64"], ds.entropy.values[1].mean(0), rtol=1e-12
    )


def test_log_linear_toggles(ex, ds):
    meas = ex.figures["measure"]
    assert type(meas.x_scale).__name__ == "LinearScale"
    n0 = len(_data(ex, "measure", "lines")["xs"][0])
    ex.step_scale.value = "log"
    assert type(meas.x_scale).__name__ == "LogScale"
    assert len(_data(ex, "measure", "lines")["xs"][0]) == n0 - 1  # step 0 cannot be on a log axis
    ex.measure_scale.value = "log"
    assert type(meas.y_scale).__name__ == "LogScale"
    ex.spectrum_scale.value = "linear"
    spec = ex.figures["spectrum"]
    assert type(spec.x_scale).__name__ == "LinearScale" and type(spec.y_scale).__name__ == "LinearScale"
    ex.spectrum_scale.value = "log"
    assert type(spec.y_scale).__name__ == "LogScale"


def _descendants(widget) -> list:
    """Every ipywidget in a layout (its children, recursively)."""
    out = [widget]
    for child in getattr(widget, "children", ()):
        out += _descendants(child)
    return out


def test_every_control_of_a_full_cube_is_shown(ex):
    shown = _descendants(ex.widget)
    for name in ("widths", "step", "play", "eigen_range", "measure", "seed", "spectrum_scale", "step_scale"):
        assert getattr(ex, name) in shown, name


def test_cube_without_seed_or_width():
    ds = synthetic_cube((32,), None, (0, 5, 50), 6).isel(width=0, drop=True)
    ex = Explorer(ds)
    assert set(ex.figures) == {"spectrum", "measure"}
    assert ex.seed.disabled and ex.widths.disabled
    shown = _descendants(ex.widget)  # a dimension the cube lacks has no control on the page
    assert ex.widths not in shown and ex.seed not in shown
    assert ex.step in shown and ex.measure in shown and ex.eigen_range in shown
    ex.step.value = 50
    np.testing.assert_allclose(_data(ex, "spectrum", "lines")["ys"][0], ds.eigenvalues.sel(step=50).values)
    with pytest.raises(ValueError, match="measure"):
        Explorer(ds, measure="nope")


def test_export_control_writes_under_figures(ex, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ex.export_figure.value = "measure"
    ex.export_format.value = "html"
    ex.export_name.value = "entropy-run"
    ex.export_button.click()
    path = tmp_path / "figures" / "entropy-run-measure.html"
    assert path.exists() and "figures/entropy-run-measure.html" in ex.export_status.value
    assert "<script" in path.read_text()
    ex.export_name.value = "../escape"
    ex.export_button.click()
    assert "export failed" in ex.export_status.value and "name" in ex.export_status.value


@pytest.mark.skipif(os.environ.get("NTKBENCH_SKIP_BROWSER") == "1", reason="NTKBENCH_SKIP_BROWSER=1")
def test_export_png_svg(ex, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    png = ex.export("spectrum", "png", name="s")
    data = png.read_bytes()
    assert png == tmp_path.joinpath("figures", "s-spectrum.png").relative_to(tmp_path)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    fig = ex.figures["spectrum"]
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (2 * fig.width, 2 * fig.height)
    svg = ex.export("scaling", "svg", name="s")
    assert ET.parse(svg).getroot().tag.endswith("svg")


# --------------------------------------------------------------------------- RunPanel


def test_runpanel_with_runner_opens_explorer(tmp_path):
    cube = synthetic_cube((8, 32), (0,), (0, 5), 4)
    calls = []

    def runner(config, out):
        calls.append((config, out))
        time.sleep(0.3)
        return cube

    panel = RunPanel({"title": "demo"}, out=tmp_path / "r", runner=runner, poll=0.05)
    assert panel.progress.value == 0
    panel.button.click()
    assert panel.button.disabled
    result = panel.run(timeout=30)
    assert result is cube and calls == [({"title": "demo"}, tmp_path / "r")]
    assert panel.progress.value == panel.progress.max and panel.progress.bar_style == "success"
    assert isinstance(panel.explorer, Explorer) and not panel.button.disabled
    (out,) = panel.output.outputs
    assert out["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.explorer.widget.model_id


def test_runpanel_reports_errors(tmp_path):
    def runner(config, out):
        raise ValueError("config key 'model': bad width")

    panel = RunPanel({}, out=tmp_path, runner=runner)
    with pytest.raises(ValueError, match="bad width"):
        panel.run(timeout=30)
    assert panel.progress.bar_style == "danger" and "bad width" in panel.status.value
    with pytest.raises(TypeError, match="config"):
        RunPanel([1, 2])


@pytest.mark.slow
def test_runpanel_real_sweep(tmp_path):
    config = {
        "title": "tiny",
        "seed": 0,
        "model": {"name": "mlp", "width": 8, "depth": 1},
        "data": {"name": "digits", "n_train": 32, "n_test": 16},
        "train": {"optimizer": "sgd", "lr": 0.05, "steps": 10, "batch_size": 16, "loss": "mse"},
        "record": {"every": 5, "probe": 8},
        "grid": {"width": [8, 16]},
    }
    panel = RunPanel(config, out=tmp_path / "runs", poll=0.05)
    assert panel.progress.max == 2
    cube = panel.run(timeout=240)
    assert panel.progress.value == 2
    assert sorted(p.name for p in (tmp_path / "runs").glob("run-*.nc")) == ["run-width=16.nc", "run-width=8.nc"]
    assert list(cube["width"].values) == [8, 16] and list(cube["step"].values) == [0, 5, 10]
    ex = panel.explorer
    np.testing.assert_allclose(
        _data(ex, "spectrum", "lines")["ys"][1], cube.eigenvalues.sel(width=16, step=0).values, rtol=1e-6
    )
