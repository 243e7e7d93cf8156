"""Bokeh figure builders: the plotted columns equal the cube's values (computed here with
plain NumPy), labels come from the attributes, and export writes valid PNG/SVG/HTML."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from ntkbench import plots
from ntkbench.testing import synthetic_cube

WIDTHS, SEEDS, STEPS, NE = (16, 64, 256), (0, 1, 2), (0, 10, 30, 100), 12


@pytest.fixture(scope="module")
def ds():
    return synthetic_cube(WIDTHS, SEEDS, STEPS, NE, seed=3)


def _src(fig, name):
    return fig.select_one({"name": name}).data


# --------------------------------------------------------------------------- synthetic cube


def test_synthetic_cube_schema_and_consistency(ds):
    assert dict(ds.sizes) == {"width": 3, "seed": 3, "step": 4, "eigen_index": NE}
    for name, var in ds.data_vars.items():
        assert var.attrs["long_name"] and "units" in var.attrs, name
    for key in ("ntkbench_version", "jax_version", "created", "config", "paper", "title"):
        assert key in ds.attrs
    eig = ds.eigenvalues.values
    assert np.all(np.diff(eig, axis=-1) <= 0)  # descending
    p = eig / eig.sum(-1, keepdims=True)
    np.testing.assert_allclose(ds.entropy.values, -(p * np.log(p)).sum(-1), rtol=1e-12)
    np.testing.assert_allclose(ds.trace.values, eig.sum(-1), rtol=1e-12)
    np.testing.assert_allclose(ds.effective_rank.values, np.exp(ds.entropy.values), rtol=1e-12)
    try:
        from ntkbench.cube import validate
    except ImportError:
        return
    validate(ds)


# --------------------------------------------------------------------------- spectrum


def test_spectrum_by_width_is_seed_mean(ds):
    fig = plots.spectrum_plot(ds, step=30)
    lines = _src(fig, "lines")
    assert lines["label"] == [f"width {w}" for w in WIDTHS]
    ref = ds.eigenvalues.values[:, :, STEPS.index(30), :].mean(axis=1)  # (width, eigen)
    for i in range(len(WIDTHS)):
        np.testing.assert_allclose(lines["ys"][i], ref[i], rtol=1e-12)
        np.testing.assert_array_equal(lines["xs"][i], np.arange(1, NE + 1))
    assert len(set(lines["color"])) == 3
    assert "eigenvalue" in fig.yaxis[0].axis_label
    assert fig.x_scale.__class__.__name__ == "LogScale" and fig.y_scale.__class__.__name__ == "LogScale"


def test_spectrum_by_step_single_seed_and_range(ds):
    data = plots.spectrum_data(ds, by="step", width=64, seed=2, eigen_range=(3, 7))
    assert data["lines"]["label"] == [f"step {s}" for s in STEPS]
    ref = ds.eigenvalues.values[WIDTHS.index(64), SEEDS.index(2), :, 3:8]
    for j in range(len(STEPS)):
        np.testing.assert_allclose(data["lines"]["ys"][j], ref[j], rtol=1e-12)
    assert set(data["points"]["eigen_index"]) == {3, 4, 5, 6, 7}
    assert len(data["points"]["x"]) == len(STEPS) * 5


def test_spectrum_step_resolution(ds):
    # -1 is the last step; other values snap to the nearest recorded step
    last = plots.spectrum_data(ds, step=-1)["points"]["step"]
    near = plots.spectrum_data(ds, step=90)["points"]["step"]
    assert set(last) == {100} and set(near) == {100}


def test_spectrum_log_drops_nonpositive(ds):
    bad = ds.copy(deep=True)
    bad["eigenvalues"][0, 0, 0, -1] = 0.0
    bad["eigenvalues"][0, 1:, 0, -1] = 0.0
    log = plots.spectrum_data(bad, step=0, width=[16])
    lin = plots.spectrum_data(bad, step=0, width=[16], log=False)
    assert len(log["lines"]["ys"][0]) == NE - 1 and len(lin["lines"]["ys"][0]) == NE


def test_bad_arguments_name_the_argument(ds):
    with pytest.raises(ValueError, match="widths"):
        plots.spectrum_data(ds, width=[17])
    with pytest.raises(ValueError, match="by"):
        plots.spectrum_data(ds, by="seed")
    with pytest.raises(ValueError, match="seed"):
        plots.measure_data(ds, "entropy", seed=7)
    with pytest.raises(ValueError, match="spectral_position"):
        plots.measure_plot(ds, "spectral_position")
    with pytest.raises(TypeError, match="ds"):
        plots.spectrum_plot({"eigenvalues": 1})
    with pytest.raises(ValueError, match="eigen_range"):
        plots.spectrum_data(ds, eigen_range=(5, 2))
    with pytest.raises(ValueError, match="K"):
        plots.kernel_image(np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        plots.kernel_image(np.array([[1.0, np.nan], [0.0, 1.0]]))


# --------------------------------------------------------------------------- measure


def test_measure_mean_and_std_band(ds):
    fig = plots.measure_plot(ds, "trace", widths=[16, 256])
    lines, bands, points = _src(fig, "lines"), _src(fig, "bands"), _src(fig, "points")
    tr = ds.trace.values  # (width, seed, step)
    for k, w in enumerate((16, 256)):
        i = WIDTHS.index(w)
        mean, std = tr[i].mean(0), tr[i].std(0)
        np.testing.assert_allclose(lines["ys"][k], mean, rtol=1e-12)
        np.testing.assert_array_equal(lines["xs"][k], STEPS)
        n = len(STEPS)
        np.testing.assert_allclose(bands["ys"][k][:n], mean + std, rtol=1e-12)
        np.testing.assert_allclose(bands["ys"][k][n:], (mean - std)[::-1], rtol=1e-12)
        sel = [j for j, wv in enumerate(points["width"]) if wv == w]
        np.testing.assert_allclose(np.array(points["std"])[sel], std, rtol=1e-12)
    assert fig.yaxis[0].axis_label == plots.label(ds, "trace")
    assert fig.xaxis[0].axis_label == plots.label(ds, "step")


def test_measure_single_seed_has_no_band_and_log_x_drops_step0(ds):
    data = plots.measure_data(ds, "entropy", seed=1, log_x=True)
    assert data["bands"]["xs"] == []
    np.testing.assert_array_equal(data["lines"]["xs"][0], STEPS[1:])
    np.testing.assert_allclose(data["lines"]["ys"][0], ds.entropy.values[0, 1, 1:], rtol=1e-12)


def test_cube_without_seed_and_width():
    ds = synthetic_cube((32,), None, (0, 5, 50), 6).isel(width=0, drop=True)
    assert "seed" not in ds.dims and "width" not in ds.dims
    fig = plots.measure_plot(ds, "loss")
    np.testing.assert_allclose(_src(fig, "lines")["ys"][0], ds.loss.values)
    spec = plots.spectrum_plot(ds, step=5)
    np.testing.assert_allclose(_src(spec, "lines")["ys"][0], ds.eigenvalues.sel(step=5).values)
    with pytest.raises(ValueError, match="width"):
        plots.scaling_plot(ds, "entropy")
    heat = plots.heatmap_plot(ds, "entropy")
    np.testing.assert_allclose(_src(heat, "cells")["value"], ds.entropy.values)
    ds2 = ds.drop_vars(["eigenvalues", "entropy"])
    assert plots.FIGURES["measure"](ds2) is not None
    with pytest.raises(ValueError, match="eigenvalues"):
        plots.FIGURES["spectrum"](ds2)


# --------------------------------------------------------------------------- scaling


def test_power_law_fit_against_polyfit_reference():
    x = np.array([8.0, 16, 32, 64, 128])
    a, b, r2 = plots.power_law_fit(x, 3.0 * x**-0.5)
    assert a == pytest.approx(3.0, rel=1e-10) and b == pytest.approx(-0.5, abs=1e-12) and r2 == pytest.approx(1.0)
    y = 2.0 * x**0.3 * np.exp(np.array([0.1, -0.05, 0.02, -0.1, 0.04]))
    _, b, r2 = plots.power_law_fit(x, y)
    # closed-form simple linear regression in log space
    lx, ly = np.log(x), np.log(y)
    slope = ((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum()
    corr = np.corrcoef(lx, ly)[0, 1]
    assert b == pytest.approx(slope, rel=1e-10) and r2 == pytest.approx(corr**2, rel=1e-10)
    with pytest.raises(ValueError):
        plots.power_law_fit([1.0, -2.0], [1.0, 1.0])


def test_scaling_plot_points_fit_and_legend(ds):
    fig = plots.scaling_plot(ds, "trace", step=-1)
    pts, fit, seeds = _src(fig, "points"), _src(fig, "fit"), _src(fig, "seeds")
    ref = ds.trace.values[:, :, -1]
    np.testing.assert_array_equal(pts["x"], WIDTHS)
    np.testing.assert_allclose(pts["y"], ref.mean(1), rtol=1e-12)
    np.testing.assert_allclose(pts["std"], ref.std(1), rtol=1e-12)
    assert sorted(seeds["y"]) == pytest.approx(sorted(ref.ravel()))
    _, b, r2 = plots.power_law_fit(np.array(WIDTHS, float), ref.mean(1))
    assert fit["label"] == [f"∝ width^{b:.3f}  (R² = {r2:.3f})"]
    assert fig.legend[0].items, "the fit is in the legend"
    assert "100" in fig.title.text


# --------------------------------------------------------------------------- heatmap + kernel


def test_heatmap_cells(ds):
    fig = plots.heatmap_plot(ds, "entropy")
    cells = _src(fig, "cells")
    ref = ds.entropy.values.mean(1)  # (width, step)
    for w, s, v in zip(cells["width"], cells["step"], cells["value"], strict=True):
        assert v == pytest.approx(ref[WIDTHS.index(w), STEPS.index(s)], rel=1e-12)
    assert len(cells["value"]) == len(WIDTHS) * len(STEPS)
    assert list(fig.x_range.factors) == [str(s) for s in STEPS]


def test_kernel_image():
    K = np.array([[2.0, -1.0, 0.0], [-1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
    fig = plots.kernel_image(K)
    np.testing.assert_array_equal(_src(fig, "image")["image"][0], K)
    mapper = fig.renderers[0].glyph.color_mapper
    assert mapper.low == -2.0 and mapper.high == 2.0  # symmetric diverging map
    assert fig.y_range.start > fig.y_range.end  # row 0 on top


def test_registry(ds):
    assert set(plots.FIGURES) == {"spectrum", "measure", "scaling", "heatmap"}
    for name, make in plots.FIGURES.items():
        fig = make(ds)
        assert fig.renderers, name


# --------------------------------------------------------------------------- export


def test_export_html_is_standalone(ds, tmp_path):
    path = plots.export(plots.measure_plot(ds), tmp_path / "m", "html")
    assert path == tmp_path / "m.html"
    text = path.read_text()
    assert "<html" in text.lower() and "Bokeh" in text
    # no external resources: no <script src=...> and no stylesheet links
    assert re.findall(r"<script[^>]*\ssrc=", text) == []
    assert re.findall(r"<link[^>]*\shref=", text) == []
    assert len(text) > 500_000  # BokehJS is inlined


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.skipif(os.environ.get("NTKBENCH_SKIP_BROWSER") == "1", reason="NTKBENCH_SKIP_BROWSER=1")
def test_export_png_and_svg(ds, tmp_path):
    fig = plots.spectrum_plot(ds)
    png = plots.export(fig, tmp_path / "s.png")
    assert _png_size(png.read_bytes()) == (2 * fig.width, 2 * fig.height)
    from PIL import Image, ImageStat

    with Image.open(png) as im:
        assert ImageStat.Stat(im.convert("L")).stddev[0] > 10  # not blank
    png1 = plots.export(plots.heatmap_plot(ds), tmp_path / "h", "png", scale=1)
    assert png1.suffix == ".png" and _png_size(png1.read_bytes())[1] == 360
    svg = plots.export(fig, tmp_path / "s.svg")
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    assert len(list(root.iter())) > 50  # real content, not an empty canvas
    assert fig.output_backend == "canvas"  # restored


def test_export_without_chromium_says_how_to_install(ds, tmp_path, monkeypatch):
    # webdriver() looks these up in the module that holds it
    monkeypatch.setattr(plots._export, "CHROMIUM", str(tmp_path / "nope"))
    monkeypatch.setattr(plots._export, "CHROMEDRIVER", str(tmp_path / "nope"))
    monkeypatch.setattr(plots._export, "_DRIVER", [])
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("NTKBENCH_CHROMIUM", raising=False)
    with pytest.raises(RuntimeError, match="apt-get install chromium chromium-driver"):
        plots.export(plots.measure_plot(ds), tmp_path / "x.png")
    with pytest.raises(ValueError, match="format"):
        plots.export(plots.measure_plot(ds), tmp_path / "x", "jpeg")


# --------------------------------------------------------------------------- diverged runs


def _with_diverged(ds, width: int, seed: int, at: int):
    """``ds`` with the run (width, seed) marked diverged at step ``at``: its values blow up
    before ``at`` and are NaN from there on, as ``ntkbench.train`` leaves them."""
    from ntkbench import cube

    bad = ds.copy(deep=True)
    status = np.zeros((len(WIDTHS), len(SEEDS)), np.int8)
    step = np.full(status.shape, -1, np.int64)
    i, j = WIDTHS.index(width), SEEDS.index(seed)
    status[i, j], step[i, j] = cube.DIVERGED, at
    bad["status"] = (("width", "seed"), status, cube.var_attrs("status"))
    bad["diverged_step"] = (("width", "seed"), step, cube.var_attrs("diverged_step"))
    for name in ("trace", "entropy", "eigenvalues"):
        v = bad[name].values
        later = np.asarray(STEPS) >= at
        v[i, j, ~later] *= 1e12
        v[i, j, later] = np.nan
    return bad, i, j


def test_diverged_runs_are_left_out_and_drawn_apart(ds):
    """A diverged run is left out of the mean, band, fit and spectrum (each computed here
    from the finished seeds with NumPy), drawn dashed in its own source with a cross at its
    last finite value, and the fit label says it was left out."""
    from ntkbench import cube

    bad, i, j = _with_diverged(ds, 64, 1, at=30)
    keep = [k for k in range(len(SEEDS)) if k != j]
    assert cube.diverged(bad).values.sum() == 1 and cube.finished(ds) is ds
    fig = plots.measure_plot(bad, "trace")
    lines, div, end = _src(fig, "lines"), _src(fig, "diverged"), _src(fig, "diverged_end")
    tr = ds.trace.values
    np.testing.assert_allclose(lines["ys"][i], tr[i][keep].mean(0), rtol=1e-12)
    np.testing.assert_allclose(lines["ys"][0], tr[0].mean(0), rtol=1e-12)  # other widths: every seed
    assert div["run"] == ["diverged, left out (width 64, seed 1)"]
    np.testing.assert_array_equal(div["xs"][0], [0, 10])  # finite until the divergence
    np.testing.assert_allclose(div["ys"][0], tr[i, j, :2] * 1e12, rtol=1e-6)
    assert end["x"] == [10] and end["y"] == [div["ys"][0][-1]]
    assert fig.y_range.renderers, "the finished runs set the y range"
    one = plots.measure_data(bad, "trace", seed=1)  # that seed alone: no finished line at width 64
    assert one["lines"]["ys"][i] == [] and one["lines"]["label"][i] == "width 64 (no finished run)"
    assert len(one["diverged"]["xs"]) == 1 and plots.measure_data(bad, "trace", seed=0)["diverged"]["xs"] == []

    sc = plots.scaling_data(bad, "trace", step=0)
    ref = tr[:, :, 0].copy()
    np.testing.assert_allclose(sc["points"]["y"][i], ref[i][keep].mean(), rtol=1e-12)
    assert sc["fit"]["label"][0].endswith("; 1 diverged run left out)")
    sp = plots.spectrum_data(bad, step=0)
    np.testing.assert_allclose(sp["lines"]["ys"][i], ds.eigenvalues.values[i][keep][:, 0].mean(0), rtol=1e-6)


def _legend_fig(xs, ys, labels=("a", "b")):
    from bokeh.models import ColumnDataSource

    fig = plots.new_figure("t", "x", "y", False, False, width=500, height=350)
    src = ColumnDataSource({"xs": xs, "ys": ys, "label": list(labels)}, name="lines")
    fig.multi_line("xs", "ys", source=src, legend_field="label")
    plots.legend_style(fig, "top_right")
    return fig, src


def test_legend_goes_where_the_data_are_not():
    # a rising diagonal: bottom left and top right hold data, the other two corners are free
    fig, src = _legend_fig([[0, 1], [0, 1]], [[0, 1], [0.05, 1.05]])
    assert plots.place_legend(fig) == "top_left" and fig.legend[0] in fig.center
    # new data (a falling diagonal) on a redraw: the legend follows to a free corner
    src.data = {"xs": [[0, 1], [0, 1]], "ys": [[1, 0], [1.05, 0.05]], "label": ["a", "b"]}
    assert plots.place_legend(fig, redraw=True) == "top_right"
    # apply() moves it too (the legend is tagged)
    assert plots.AUTO_LEGEND in fig.legend[0].tags


def test_legend_beside_the_plot_when_every_corner_has_data():
    box = [[0, 1, 1, 0, 0], [0.5, 0.5]]  # the frame's edges: every corner holds data
    fig, _ = _legend_fig(box, [[0, 0, 1, 1, 0], [0, 1]], labels=("a long label for the first line", "b"))
    width = fig.width
    assert plots.place_legend(fig) is None
    assert fig.legend[0] in fig.right and fig.legend[0] not in fig.center
    # grown by at least the label's width at 10 pt (about 5 px per character), so it is not cut
    assert fig.width - width >= 5 * len("a long label for the first line")
    assert plots.place_legend(fig, redraw=True) is None and fig.width > width  # stays beside, same size


def test_legend_below_grows_the_figure_by_its_rows():
    fig, _ = _legend_fig([[0, 1]] * 3, [[0, 1]] * 3, labels=("a", "b", "c"))
    height = fig.height
    plots.legend_beside(fig, "below")
    assert fig.legend[0] in fig.below and fig.height - height >= 3 * 12
    with pytest.raises(ValueError, match="side"):
        plots.legend_beside(fig, "left")


def test_fit_width_flows_panels_and_keeps_names():
    from bokeh.layouts import column, gridplot
    from bokeh.models import Div, Row

    figs = [plots.new_figure(f"p{i}", "x", "y", False, False, width=400, height=300, name=f"p{i}") for i in range(3)]
    layout = column(Div(text="head", width=1200, name="header"), gridplot([figs], toolbar_location="right"))
    assert plots.natural_width(layout) == 3 * 400 + 30  # the widest row, the grid toolbar included
    shown = plots.fit_width(layout)
    rows = list(shown.select({"type": Row}))
    assert len(rows) == 1 and rows[0].styles["flex-wrap"] == "wrap" and list(rows[0].children) == figs
    assert shown.select_one({"name": "header"}).sizing_mode == "stretch_width"
    assert set(plots.figure_index(shown)["plots"]) == {"p0", "p1", "p2"}


def test_legend_of_an_empty_plot_stays_where_it_was_put():
    fig, _ = _legend_fig([[], []], [[], []])
    plots.legend_style(fig, "bottom_left")
    assert plots.place_legend(fig) == "bottom_left" and fig.legend[0].location == "bottom_left"


# --------------------------------------------------------------------------- figure data


def _line_figure_data(**extra):
    """Figure data of a one-panel line figure (:func:`plots.line_grid`), plus ``extra`` keys."""
    data = plots.figure_data("F-test", "<b>head</b>")
    plots.set_panel(data, "p", "title", "x", "y", log_x=False, log_y=False)
    lines, bands = plots.empty_lines(), plots.empty_bands()
    plots.add_series(lines, bands, np.arange(1.0, 4.0), [(np.array([1.0, 2, 3]), None)], "#1f5fa8", "a", log_x=False)
    data["panels"], data["legend"] = [["p"]], ["p"]
    data["sources"] = {"p-lines": lines, "p-bands": bands}
    data["spans"] = {"p-marker": 2.0}
    data.update(extra)
    return data


def test_figure_data_schema_has_every_key_and_each_is_optional():
    import typing

    keys = {"layout", "header", "panels", "legend", "legend_location", "sources", "titles", "x_labels", "y_labels"}
    keys |= {"scales", "ranges", "spans", "factors"}
    assert plots.FIGURE_DATA_KEYS == keys == set(typing.get_type_hints(plots.FigureData))
    assert plots.FigureData.__required_keys__ == frozenset()  # total=False
    assert set(plots.figure_data("F-x")) <= keys


def test_an_unknown_figure_data_key_is_an_error_not_ignored():
    from ntkbench import standalone

    fig = plots.line_grid(_line_figure_data(), panel_size=(300, 200), name="F-test")
    plots.apply(fig, _line_figure_data(header="new", legend_location="top_left"))  # known keys are applied
    assert fig.select_one({"name": "header"}).text == "new"
    bad = _line_figure_data(header="changed", legend_locaton="top_right")
    consumers = [  # apply, layout_key, a builder, the standalone page's payload
        lambda d: plots.apply(fig, d),
        plots.layout_key,
        lambda d: plots.line_grid(d, panel_size=(300, 200), name="F-test"),
        standalone._figure_payload,
    ]
    for consume in consumers:
        with pytest.raises(ValueError, match=r"unknown key 'legend_locaton' \(did you mean 'legend_location'\?\)"):
            consume(bad)
    assert fig.select_one({"name": "header"}).text == "new", "apply changed the figure before refusing"
    with pytest.raises(ValueError, match=r"unknown keys 'x', 'sourses' \(did you mean 'sources'\?\)"):
        plots.check_figure_data({"x": 1, "sourses": {}})


def test_choice_literals_are_the_runtime_choices():
    from typing import get_args

    from ntkbench import _types, standalone, widgets

    assert plots.EXPORT_FORMATS == get_args(_types.ExportFormat) == ("png", "svg", "pdf", "html")
    assert standalone.PAPER_CONTROL_KINDS == get_args(_types.PaperControlKind)
    assert widgets.Control.KINDS == get_args(_types.ControlKind)
    assert set(get_args(_types.PaperControlKind)) <= set(get_args(_types.ControlKind))
    ds = synthetic_cube((16,), (0, 1), (0, 10), 4)
    da = ds["entropy"].sel(width=16)
    for mode in get_args(_types.SeedMode):  # every seed mode draws, and so does a seed
        assert plots.seed_traces(da, plots.seed_mode(mode, ds))
    assert len(plots.seed_traces(da, plots.seed_mode(1, ds))) == 1
    for spread in get_args(_types.Spread):
        assert plots.seed_traces(da, "mean", spread=spread)[0][1] is not None
    for by in get_args(_types.SpectrumBy):
        assert plots.spectrum_data(ds, by=by)["lines"]["xs"]
    with pytest.raises(ValueError, match="seed must be"):
        plots.seed_mode("median", ds)


# --------------------------------------------------------------------------- paper-figure pieces


def test_probe_and_phase_rows_draw_every_net_on_both_probes(ds):
    # two nets (widths), train dark and test light; columns (col, train var, test var, label, log y)
    nets = [(ds.sel(width=16), "#1f5fa8", "w16"), (ds.sel(width=256), "#c2410c", "w256")]
    columns = [("loss", "loss", "test_loss", "loss", True), ("acc", "accuracy", "test_accuracy", "accuracy", False)]
    x = np.asarray(ds["step"].values, float) + 1
    data = plots.figure_data("F-x", "header")
    keys = plots.probe_row(data, "r", "row title", x, nets, columns, test=True, mode="mean")
    assert keys == ["r-loss", "r-acc"]
    lines = data["sources"]["r-loss-lines"]
    assert lines["label"] == ["w16 train", "w16 test", "w256 train", "w256 test"]
    np.testing.assert_allclose(lines["ys"][1], ds["test_loss"].sel(width=16).mean("seed").values)
    assert lines["color"][1] == plots.lighten("#1f5fa8") and lines["width"] == [2.4, 1.6, 2.4, 1.6]
    assert len(data["sources"]["r-loss-bands"]["xs"]) == 4  # mean ± std of three seeds
    assert data["titles"] == {"r-loss": "row title", "r-acc": ""} and list(data["scales"]["r-acc"]) == [True, False]
    only_train = plots.figure_data("F-x", "header")
    plots.probe_row(only_train, "r", "t", x, nets, columns, test=False, mode=1)
    assert only_train["sources"]["r-acc-lines"]["label"] == ["w16 train", "w256 train"]

    phase = plots.figure_data("F-y", "header")
    keys = plots.phase_row(
        phase, "p", "t", nets, columns[1:], x_vars=("loss", "test_loss"), x_label="loss",
        steps=ds["step"].values, at=2, test=True, mode="all",
    )  # fmt: skip
    src = phase["sources"]
    assert keys == ["p-acc"] and set(src) == {"p-acc-lines", "p-acc-bands", "p-acc-ends", "p-acc-marker"}
    assert len(src["p-acc-lines"]["xs"]) == 2 * 2 * len(SEEDS)  # nets × probes × seeds
    sel = ds.sel(width=16, seed=0)
    np.testing.assert_allclose(src["p-acc-lines"]["xs"][0], sel["loss"].values)
    np.testing.assert_allclose(src["p-acc-lines"]["ys"][0], sel["accuracy"].values)
    ends = src["p-acc-ends"]
    assert ends["marker"][:2] == ["circle", "square"] and ends["label"][:2] == [
        "w16 train step 0",
        "w16 train step 100",
    ]
    assert src["p-acc-marker"]["x"][0] == float(sel["loss"].values[2]) and src["p-acc-bands"]["xs"] == []
    phase["panels"] = [keys]
    fig = plots.panel_grid(phase, lambda f, k: plots.trajectory_points(f, phase, k), panel_size=(300, 200), name="F-y")
    assert _src(fig, "p-acc-ends")["marker"] == ends["marker"] and _src(fig, "p-acc-marker")["y"]


def test_trajectories_leave_out_what_a_log_axis_cannot_show():
    cols = plots.empty_trajectories()
    x, y = np.array([1.0, 0.5, np.nan, 0.1]), np.array([2.0, -1.0, 3.0, 4.0])
    plots.add_trajectories(cols, [(x, None)], [(y, None)], [0, 1, 2, 3], "#000000", "net", at=1, log_y=True)
    assert cols["lines"]["xs"] == [[1.0, 0.1]] and cols["lines"]["ys"] == [[2.0, 4.0]]
    assert cols["ends"]["label"] == ["net step 0", "net step 3"]
    assert cols["marker"]["x"] == []  # step index 1 is not shown (y ≤ 0 on a log axis)


def test_heat_maps_of_categories_in_rows_and_of_a_numeric_axis_against_steps():
    data = plots.figure_data("F-h", "heat maps")
    data.update(factors={"x": ["1", "2"], "y": ["a"]})
    for key, v in (("h-q", 1.0), ("h-r", 2.0)):
        data["sources"][f"{key}-cells"] = plots.heatmap_cells([[v, v + 1]], [1, 2], ["a"], low=0.0, high=3.0)
        data["titles"][key] = key
    data["panels"] = [["h-q"], ["h-r"]]
    mappers = [plots.color_mapper(0.0, 3.0, name="m-q"), plots.color_mapper(0.0, 3.0, log=True, name="m-r")]
    fig = plots.heatmap_rows(data, mappers, name="F-h", si_colorbar=[False, True], x_label="x", y_label="y", cell=40)
    index = plots.figure_index(fig)
    assert fig.name == "F-h" and index["divs"]["header"].text == "heat maps"
    assert index["plots"]["h-r"].right and index["plots"]["h-q"].title.text == "h-q"
    assert _src(fig, "h-r-cells")["value"] == [2.0, 3.0]

    vals = np.array([[0.5, 0.3, np.nan], [0.1, 0.2, 0.7]])
    cells = plots.step_heatmap_cells(vals, [0, 100])
    assert cells["x"] == [1, 2, 3, 1, 2, 3] and cells["step_label"] == ["0"] * 3 + ["100"] * 3
    assert np.isnan(cells["value"][2]) and cells["value"][5] == 0.7
    heat, renderer = plots.step_heatmap(
        "w", "weights", cells, plots.color_mapper(0.1, 0.7, log=True), n_x=3, steps=["0", "100"], x_label="k",
        colorbar_title="w_k",
    )  # fmt: skip
    assert (heat.x_range.start, heat.x_range.end) == (0.5, 3.5) and list(heat.y_range.factors) == ["0", "100"]
    assert renderer.data_source.name == "w-cells" and heat.right[0].title == "w_k"
    assert heat.yaxis[0].axis_label == "step"


def test_power_fit_line():
    fits = {"xs": [], "ys": [], "color": [], "label": []}
    plots.add_power_fit(fits, np.array([1.0, 10.0, 100.0]), (3.0, -0.5, 0.99), "#111111", "fit")
    np.testing.assert_allclose(fits["ys"][0], [3.0, 3.0 / np.sqrt(10), 0.3])
    assert fits["color"] == ["#111111"] and fits["label"] == ["fit"]
