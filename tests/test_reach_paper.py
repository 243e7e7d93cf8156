"""Paper `reach`: the test-sized run has the expected structure and matches independent
recomputations (parameter counts of freshly built models, the LNP identity, χ_pos from the
eigenpairs); the paper's qualitative claims hold on the shipped quick cube
(``data/reach_quick.nc``, the quick config: TinyTransformers of 3 widths × 2 seeds on
stories and on digit pixels, the random-feature model frozen vs trained at 2 sizes × 4
seeds), with margins and in every seed where the claim is per run; figures, summary, CLI
resume and notebook widgets work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _papers import assert_summary_is_strict_json
from ntkbench.papers import reach as paper

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "reach_quick.nc"

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::ResourceWarning")]


@pytest.fixture(scope="module")
def run_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("reach-paper")
    paper.run(out, config="test", progress=False, formats=("png", "html"))
    return out


@pytest.fixture(scope="module")
def test_cubes(run_out):
    return paper.open_cubes(run_out / "reach.nc")


@pytest.fixture(scope="module")
def shipped():
    if not SHIPPED.exists():
        pytest.fail(f"{SHIPPED} is missing: run `make data`")
    return paper.open_cubes(SHIPPED)


# --------------------------------------------------------------------------- structure


def test_cubes_have_the_expected_dims_and_variables(test_cubes, shipped):
    from ntkbench import cube

    for cubes in (test_cubes, shipped):
        lm = cubes["stories"]
        assert set(lm.dims) == {"width", "seed", "step", "eigen_index"}
        for name in paper.LM_MEASURES:
            assert name in lm.data_vars, name
        rf = cubes["rf"]
        assert set(rf.dims) == {"features", "width", "seed", "step", "eigen_index"}
        assert rf["features"].values.tolist() == ["frozen", "trained"]
        assert rf["residual_weights"].dims[-2:] == ("step", "eigen_index")
        assert rf.sizes["eigen_index"] == json.loads(rf.attrs["config"])["data"]["n_train"]  # probe = training set
        for name in paper.RF_MEASURES:
            assert name in rf.data_vars, name
        for ds in cubes.values():
            cube.validate(ds)
            assert json.loads(ds.attrs["config"])["paper"] == "reach"
    assert set(shipped) == {"stories", "pixels", "rf"}


def test_compute_uses_the_models_parameter_count(test_cubes):
    import jax

    import ntkbench as nb

    ds = test_cubes["stories"]
    cfg = json.loads(ds.attrs["config"])
    w = int(ds["width"].values[-1])
    data = nb.load("stories", 2, 1, context=cfg["data"]["context"])
    model = nb.make_model({**cfg["model"], "width": w}, key=jax.random.key(3), in_shape=data.in_shape, out_size=89)
    n = nb.count_params(model)
    assert paper.n_params(ds, w) == n
    tokens = cfg["train"]["batch_size"] * cfg["data"]["context"]
    np.testing.assert_allclose(paper.compute(ds, w), 6.0 * n * tokens * ds["step"].values)


def test_lnp_identity_and_eigen_position_agree(test_cubes):
    for ds in test_cubes.values():
        prod = ds["chi_loss"] * ds["chi_net"] * ds["spectral_position"]
        np.testing.assert_allclose(prod.values, ds["grad_norm_sq"].values, rtol=1e-4)
    rf = test_cubes["rf"]
    # χ_pos = Σ_k (λ_k / Tr K) w_k from the recorded spectrum and weights (an independent route)
    lam = rf["eigenvalues"]
    from_cube = (lam / lam.sum("eigen_index") * rf["residual_weights"]).sum("eigen_index")
    np.testing.assert_allclose(from_cube.values, rf["spectral_position"].values, rtol=2e-3)
    np.testing.assert_allclose(rf["residual_weights"].sum("eigen_index").values, 1.0, rtol=1e-4)
    frozen = rf["chi_net"].sel(features="frozen")  # a fixed kernel: χ_net cannot move
    np.testing.assert_allclose((frozen / frozen.isel(step=0)).values, 1.0, rtol=1e-4)


def test_median_index():
    w = np.array([[0.5, 0.5, 0.0], [0.1, 0.1, 0.8], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(paper.median_index(w), [0.0, 2.0, np.nan])


# --------------------------------------------------------------------------- the paper's claims (shipped quick cube)


def test_chi_pos_falls_during_training_for_every_size(shipped):
    for key in ("stories", "pixels"):
        ds = shipped[key]
        pos = ds["spectral_position"]
        early, end = pos.sel(step=1), pos.isel(step=-1)
        assert bool((end < early).all()), f"{key}: χ_pos rose in some run"
        ratio = (end.mean("seed") / early.mean("seed")).values
        assert np.all(ratio < 0.75), f"{key}: end/early χ_pos {ratio}"


def test_largest_model_ends_with_lower_loss(shipped):
    for key in ("stories", "pixels"):
        loss = shipped[key]["loss"].isel(step=-1)
        small, large = loss.isel(width=0), loss.isel(width=-1)
        assert bool((large < small).all()), key
        assert float(small.mean() - large.mean()) > 0.05 * float(small.mean()), key


def test_residual_weight_moves_into_the_tail_and_further_for_the_larger_model(shipped):
    rf = shipped["rf"]
    for feat in ("frozen", "trained"):
        med = {}
        for w in rf["width"].values.tolist():
            wk = rf["residual_weights"].sel(features=feat, width=w).transpose("seed", "step", "eigen_index")
            m = paper.median_index(wk.values)  # (seed, step)
            assert np.all(m[:, -1] >= m[:, 1] + 10), (feat, w, m[:, [1, -1]])
            med[w] = m[:, -1]
        small, large = (med[w] for w in rf["width"].values.tolist()[:: len(med) - 1])
        assert large.mean() > small.mean() + 5, (feat, small, large)


def test_frozen_features_plateau_while_trained_features_keep_going(shipped):
    rf = shipped["rf"]
    loss = rf["loss"]
    steps = rf["step"].values
    i10 = int(np.abs(steps - 0.1 * steps.max()).argmin())
    late = loss.isel(step=-1) / loss.isel(step=i10)  # loss ratio over the last decade of steps
    for w in rf["width"].values.tolist():
        frozen, trained = late.sel(features="frozen", width=w), late.sel(features="trained", width=w)
        assert float(frozen.min()) > 3 * float(trained.max()), (w, frozen.values, trained.values)
        chi = rf["chi_net"].sel(features="trained", width=w)
        assert bool((chi.isel(step=-1) > 1.5 * chi.isel(step=0)).all()), w
        final = loss.isel(step=-1).sel(width=w)
        assert bool((final.sel(features="trained") < 0.5 * final.sel(features="frozen")).all()), w


# --------------------------------------------------------------------------- outputs


def test_summary_numbers_are_the_cube_values(run_out, test_cubes):
    summary = json.loads((run_out / "summary.json").read_text())
    ds = test_cubes["stories"]
    w = str(int(ds["width"].values[0]))
    got = summary["scaling"]["stories"]["widths"][w]["final_loss"]
    np.testing.assert_allclose(got, ds["loss"].isel(step=-1, width=0).values, rtol=1e-3)
    c, loss = paper.compute(ds, int(w)), ds["loss"].isel(width=0).mean("seed").values
    steps = ds["step"].values
    keep = steps >= max(1, 0.1 * steps.max())
    b = np.polyfit(np.log(c[keep]), np.log(loss[keep]), 1)[0]
    assert summary["scaling"]["stories"]["widths"][w]["fit"]["b"] == pytest.approx(b, abs=1e-3)
    assert "F-d1" in (run_out / "summary.txt").read_text()


def test_every_figure_is_exported_and_not_blank(run_out):
    import io

    from PIL import Image, ImageStat

    for name in ("F-d1", "F-d2", "F-d3", "F-d4"):
        png = run_out / "figures" / f"reach-{name}.png"
        with Image.open(io.BytesIO(png.read_bytes())) as im:
            assert im.size[0] > 500 and im.size[1] > 350, (name, im.size)
            assert ImageStat.Stat(im.convert("L")).stddev[0] > 10, f"{png.name} looks blank"
        assert "Bokeh" in (run_out / "figures" / f"reach-{name}.html").read_text()[:200_000]


def test_figures_build_from_the_shipped_cube_with_the_cube_values(shipped):
    figs = paper.figures(shipped)
    assert set(figs) == {"F-d1", "F-d2", "F-d3", "F-d4"}
    d = paper.fig_d1_data(shipped, data_set="pixels")["sources"]["d1-pos-lines"]
    ref = shipped["pixels"]["spectral_position"].isel(width=0).mean("seed").values
    np.testing.assert_allclose(d["ys"][0], ref[1:], rtol=1e-6)  # step 0 has no compute on a log axis
    d4 = paper.fig_d4_data(shipped, width=int(shipped["rf"]["width"].values[-1]), features="trained", seed=1)
    n = shipped["rf"].sizes["eigen_index"]
    assert len(d4["sources"]["d4-weights-cells"]["value"]) == n * shipped["rf"].sizes["step"]
    with pytest.raises(ValueError, match="data_set"):
        paper.fig_d1_data(shipped, data_set="cifar")
    with pytest.raises(ValueError, match="width"):
        paper.fig_d4_data(shipped, width=7)


def test_workbench_every_control_redraws_in_place(shipped, tmp_path):
    wb = paper.Workbench(shipped, figures_dir=tmp_path)
    figs = dict(wb.figures)
    for ctl in wb.controls.values():
        options = getattr(ctl, "options", None)
        values = [o[1] if isinstance(o, tuple) else o for o in options] if options else [not ctl.value]
        for value in values:
            ctl.value = value
    assert all(wb.figures[n] is figs[n] for n in figs), "every control redraws in place"
    wb.data_set.value = "stories"
    lines = wb.figures["F-d1"].select_one({"name": "d1-loss-lines"}).data
    ref = paper.fig_d1_data(shipped, data_set="stories", seed=wb.seed.value, fit_from=wb.fit_from.value)
    assert dict(lines) == dict(ref["sources"]["d1-loss-lines"])
    assert wb.export("F-d4", "html").name == "reach-F-d4.html"


def test_rerun_panel_config_and_one_small_run(tmp_path, monkeypatch):
    monkeypatch.setitem(paper.CONFIGS, "quick", paper.CONFIGS["test"])  # the test run's shapes: compiled already
    panel = paper.RerunPanel(out=tmp_path / "rerun", widths="8", seeds=1, steps=5)
    cfg = panel.config()
    assert cfg["grid"] == {"width": [8], "seed": [0]} and cfg["train"]["steps"] == 5
    cube = panel.run(timeout=300)
    assert dict(cube.sizes)["width"] == 1 and panel.output.children
    panel.widths.value = "10"
    with pytest.raises(ValueError, match="multiples of 4"):
        panel.config()


def test_cli_reproduce_resumes(run_out, monkeypatch, capsys, trains_nothing):
    """A second ``reproduce`` on a finished folder trains nothing, exits 0 and leaves every
    cube as it was (the quick config is swapped for the test config already run there)."""
    import xarray as xr

    from ntkbench import cli

    monkeypatch.setitem(paper.CONFIGS, "quick", paper.CONFIGS["test"])
    before = {p: p.stat().st_mtime_ns for p in run_out.glob("runs-*/run-*.nc")}
    cubes = paper.open_cubes(run_out / "reach.nc")
    trains_nothing()
    assert cli.main(["reproduce", "reach", "--quick", "--out", str(run_out)]) == 0
    assert before == {p: p.stat().st_mtime_ns for p in run_out.glob("runs-*/run-*.nc")}
    assert "reach: results in" in capsys.readouterr().out
    again = paper.open_cubes(run_out / "reach.nc")
    assert list(again) == list(cubes)
    for name in cubes:
        xr.testing.assert_identical(again[name].drop_attrs(), cubes[name].drop_attrs())


def test_shipped_cube_is_the_quick_config(shipped):
    for name, ds in shipped.items():
        assert json.loads(ds.attrs["config"]) == paper.CONFIGS["quick"][name], (
            f"{name}: data/reach_quick.nc is not the current quick config: run `make data`"
        )


def test_summary_is_strict_json(run_out, test_cubes, shipped):
    """Every number of the summary is finite or None (never NaN): summary.json is strict JSON."""
    assert_summary_is_strict_json(paper, run_out / "summary.json", test_cubes, shipped)


def test_language_models_measure_lnp_on_the_training_batch(test_cubes, shipped):
    # the authors' convention: χ terms of the batch each step trains on, before the step; the
    # random-feature model trains full batch on its probe, where the two are the same
    for cubes in (test_cubes, shipped):
        for exp in [e for e in ("stories", "pixels") if e in cubes]:
            for name in ("chi_loss", "chi_net", "spectral_position", "grad_norm_sq"):
                assert cubes[exp][name].attrs["ntk_lnp_batch"] == "train", (exp, name)
            assert "training batch" in cubes[exp]["chi_net"].attrs["long_name"]
            assert "χ terms on the training batch" in paper.fig_d1_data(cubes, data_set=exp)["header"]


# --------------------------------------------------------------------------- the size claim's statistics


def _size_cube(exponent: float, noise: float, seed: int = 0):
    """A cube of the power config's shape: χ_pos ∝ N^exponent (N the decoders' non-embedding
    parameters) times log-normal seed noise, at every recorded step."""
    import json

    import xarray as xr

    from ntkbench.papers import _reach_power

    cfg = paper.configs("power")["stories"]
    widths = cfg["grid"]["width"]
    ds0 = xr.Dataset(attrs={"config": json.dumps(cfg)})
    n = np.array([_reach_power.non_embedding(ds0, w) for w in widths], float)
    rng = np.random.default_rng(seed)
    steps = np.arange(0, 601, 30)
    shape = (len(widths), 3, len(steps))
    pos = (n[:, None, None] ** exponent) * np.exp(noise * rng.standard_normal(shape))
    loss = 3.0 * (n[:, None, None] ** -0.1) * np.ones(shape)
    net = np.ones(shape) * np.linspace(1, 2, len(steps))
    dims = ("width", "seed", "step")
    return xr.Dataset(
        {"spectral_position": (dims, pos), "test_loss": (dims, loss), "chi_net": (dims, net)},
        coords={"width": widths, "seed": [0, 1, 2], "step": steps},
        attrs={"config": json.dumps(cfg)},
    ), n


def test_size_claim_recovers_an_injected_exponent():
    """The slope of log χ_pos against log N is the injected exponent (noise-free: exactly;
    with small noise: nearly), its interval excludes 0 only when the data resolve it, and
    the verdict says which."""
    from ntkbench.papers import _reach_power

    ds, n = _size_cube(-0.3, 0.0)
    c = _reach_power.size_claim(ds, n_boot=200)
    assert c["non_embedding_params"] == [int(v) for v in n] and c["decades_of_size"] > 2
    assert c["pos"]["slope"] == pytest.approx(-0.3, abs=1e-4) and c["pos"]["resolved"]
    assert c["loss"]["slope"] == pytest.approx(-0.1, abs=1e-4) and c["loss_variable"] == "test_loss"
    assert c["pos"]["rank"]["rho"] == pytest.approx(-1.0)
    assert c["chi_net_grew"] == c["n_runs"] == 18  # χ_net doubles in every run
    assert _reach_power.verdict(c).startswith("Reproduced")
    ds, _ = _size_cube(-0.3, 0.05)  # small noise: the slope within 0.05 of -0.3, resolved
    p = _reach_power.size_claim(ds, n_boot=500)["pos"]
    assert abs(p["slope"] + 0.3) < 0.05 and p["high"] < 0 and p["resolved"]
    ds, _ = _size_cube(0.0, 0.5)  # no trend, large seed noise: not resolved
    c = _reach_power.size_claim(ds, n_boot=500)
    assert not c["pos"]["resolved"] and c["pos"]["resolvable"] > 0.02
    assert _reach_power.verdict(c).startswith("Not reproduced at this power")
    assert "size claim" in "\n".join(_reach_power.format_size_claim("stories", c)).lower()


# --------------------------------------------------------------------------- the power run

POWER = ROOT / "data" / "reach_power.nc"


@pytest.fixture(scope="module")
def power():
    if not POWER.exists():
        pytest.fail(f"{POWER} is missing: run `make reach-power`")
    return paper.open_cubes(POWER)


def test_power_cube_has_the_issue_size_and_verdicts(power):
    """≥ 6 sizes over ≥ 2 decades of non-embedding parameters × ≥ 3 seeds on each data set,
    kernel-free (no spectrum), every run finished; the verdicts the docs state."""
    s = paper.summarize(power)
    for key in ("stories", "shakespeare"):
        c = s["size_claim"][key]
        assert len(c["widths"]) >= 6 and c["decades_of_size"] >= 2 and c["n_seeds"] >= 3
        assert "eigenvalues" not in power[key] and int((power[key]["status"] != 0).sum()) == 0
        assert c["loss"]["resolved"] and c["loss"]["high"] < 0  # larger models reach lower loss
        assert c["frontier_decades"] >= 3
        assert c["chi_net_grew"] >= 0.8 * c["n_runs"]  # gradients grow during training
    # the size claim: reproduced on the stories, reversed on Shakespeare (docs/papers/reach.md)
    assert s["size_claim"]["stories"]["pos"]["high"] < 0
    assert s["size_claim"]["shakespeare"]["pos"]["low"] > 0
    assert "Size claim on Shakespeare" in paper.format_summary(s)


def test_power_cube_is_tied_to_the_code(power, tmp_path):
    """Rerun the smallest member (width 16, seed 0, stories) with today's code. At step 0
    every value is a float32 function of the initial weights, the first batch and the fixed
    Hutchinson probes (rtol 1e-4: another CPU's kernels); after 600 Adam steps round-off has
    been amplified by training (the test loss within 1 %, χ_pos of one mini-batch within 10 %)."""
    import ntkbench as nb

    cfg = paper.configs("power")["stories"]
    cfg["grid"] = {"width": [16], "seed": [0]}
    new = nb.sweep(cfg, tmp_path / "stories", progress=False).isel(width=0, seed=0)
    old = power["stories"].sel(width=16, seed=0)
    for var in ("test_loss", "spectral_position", "chi_loss", "chi_net", "grad_norm_sq"):
        np.testing.assert_allclose(new[var].isel(step=0), old[var].isel(step=0), rtol=1e-4, err_msg=var)
    np.testing.assert_allclose(new["test_loss"].isel(step=-1), old["test_loss"].isel(step=-1), rtol=1e-2)
    np.testing.assert_allclose(new["spectral_position"].isel(step=-1), old["spectral_position"].isel(step=-1), rtol=0.1)
