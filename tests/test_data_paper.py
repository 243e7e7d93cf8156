"""Paper `data`: the test-sized run has the expected structure and matches independent
recomputations (the selected set's eNTK rebuilt from the run's own selection); the paper's
qualitative claims hold on the shipped quick cube (``data/data_quick.nc``, the quick
config: 5 repeats per method and budget, 40 random digits subsets per budget, 6 small
nets);
figures, summary, CLI resume and notebook widgets work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ntkbench as nb
from _papers import assert_summary_is_strict_json
from _x64 import enable_x64
from ntkbench.papers import _data_a1
from ntkbench.papers import data as paper

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "data_quick.nc"

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::ResourceWarning")]


@pytest.fixture(scope="module")
def run_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("data-paper")
    paper.run(out, config="test", progress=False, formats=("png", "html"))
    return out


@pytest.fixture(scope="module")
def test_cubes(run_out):
    return paper.open_cubes(run_out / "data.nc")


@pytest.fixture(scope="module")
def shipped():
    if not SHIPPED.exists():
        pytest.fail(f"{SHIPPED} is missing: run `make data`")
    return paper.open_cubes(SHIPPED)


# --------------------------------------------------------------------------- structure


def test_cubes_have_the_selection_dims_and_the_spectrum(test_cubes, shipped):
    from ntkbench import cube

    for cubes in (test_cubes, shipped):
        sel = cubes["selection"]
        assert set(sel.dims) == {"selection", "budget", "seed", "step", "eigen_index"}
        assert sel["selection"].values.tolist() == ["rnd", "random", "max_entropy"]
        assert sel["selection"].attrs["long_name"] == "training-data selection method"
        assert sel["eigenvalues"].dims[-2:] == ("step", "eigen_index")
        assert sel.sizes["eigen_index"] == max(sel["budget"].values)  # the whole selected set
        for name in paper.MEASURES:
            assert name in sel.data_vars, name
        assert set(cubes["subsets"].dims) == {"budget", "seed", "step", "eigen_index"}
        for ds in cubes.values():
            cube.validate(ds)
            assert json.loads(ds.attrs["config"])["paper"] == "data"
    assert set(shipped) == {
        "selection",
        "selection_digits",
        "selection_target",
        "selection_digits_target",
        "subsets",
        "small",
    }


def test_target_cubes_measure_the_same_sets_on_the_rnd_target_networks_cosine_kernel(test_cubes, shipped):
    for cubes in (test_cubes, shipped):
        for exp in [e for e in ("selection_target", "selection_digits_target") if e in cubes]:
            ds = cubes[exp]
            assert ds["step"].values.tolist() == [0]  # a fixed network: nothing is trained
            for name in ("eigenvalues", "entropy_normalized", "trace"):
                assert ds[name].attrs["ntk_network"] == "RND target network", (exp, name)
                assert ds[name].attrs["ntk_normalize"] == "cosine", (exp, name)
            # a cosine-normalised kernel has unit diagonal: its eigenvalues sum to the set size
            total = ds["eigenvalues"].isel(step=0).sum("eigen_index")
            np.testing.assert_allclose(total, ds["budget"].broadcast_like(total), rtol=1e-4)
    d = paper.fig_a3_data(shipped, data_set="digits", kernel="rnd_target")
    assert "RND target network" in d["header"]
    ref = shipped["selection_digits_target"]["entropy_normalized"].sel(selection="rnd").isel(step=0).mean("seed")
    np.testing.assert_allclose(d["sources"]["a3-entropy-lines"]["ys"][0], ref.values, rtol=1e-6)


def test_rnd_sets_have_higher_entropy_on_the_rnd_target_kernel_on_digits(shipped):
    # the authors' convention (the RND target network's cosine-normalised kernel): on digits
    # RND's sets are more diverse at every budget, by several standard errors overall; on
    # mnist1d they are not (documented: within a standard error at every budget)
    d, se = _rnd_minus_random(shipped["selection_digits_target"].isel(step=0), "entropy_normalized")
    assert np.all(d > 0), d
    assert d.mean() / (np.sqrt((se**2).sum()) / len(se)) > 2, (d, se)
    d, se = _rnd_minus_random(shipped["selection_target"].isel(step=0), "entropy_normalized")
    assert np.all(np.abs(d) < 2 * se), (d, se)


def test_recorded_kernel_is_that_of_the_selected_set(test_cubes):
    """Rebuild one run's training set with ntkbench.select (the sweep's seed convention: the
    run seed), its model at initialization, and the eNTK from float64 per-sample Jacobians."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import ntkbench as nb

    ds = test_cubes["selection"]
    cfg = json.loads(ds.attrs["config"])
    data = nb.load(cfg["data"]["name"], cfg["data"]["n_train"], cfg["data"]["n_test"], seed=cfg["data"]["seed"])
    idx = nb.select(data.x_train, 10, "rnd", seed=1)
    model_key, _ = jax.random.split(jax.random.key(1))
    model = nb.make_model(cfg["model"], key=model_key, in_shape=data.in_shape, out_size=data.n_outputs)
    with enable_x64():
        params, static = eqx.partition(model, eqx.is_inexact_array)
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        jac = jax.vmap(jax.jacrev(lambda p, xi: eqx.combine(p, static)(xi)), in_axes=(None, 0))
        leaves = jax.tree_util.tree_leaves(jac(params, jnp.asarray(data.x_train[idx], jnp.float64)))
        J = np.concatenate([np.asarray(j).reshape(10, data.n_outputs, -1) for j in leaves], axis=-1)
    K = np.einsum("ncp,mcp->nm", J, J)
    lam = np.clip(np.linalg.eigvalsh(K), 0, None)[::-1]
    rec = ds.sel(selection="rnd", budget=10, seed=1).isel(step=0)
    np.testing.assert_allclose(rec["eigenvalues"].values[:10], lam, rtol=2e-4, atol=1e-4 * lam[0])
    assert np.all(np.isnan(rec["eigenvalues"].values[10:]))  # padding beyond the set size
    np.testing.assert_allclose(float(rec["trace"]), np.trace(K), rtol=1e-4)


# --------------------------------------------------------------------------- claims (shipped quick cube)


def _init(ds, var):
    return ds[var].isel(step=0)


def _rnd_minus_random(ds, var):
    """Per budget: mean over repeats of RND minus random, and its standard error."""
    a, b = ds[var].sel(selection="rnd"), ds[var].sel(selection="random")
    d = (a.mean("seed") - b.mean("seed")).values
    se = (np.hypot(a.std("seed", ddof=1), b.std("seed", ddof=1)) / np.sqrt(ds.sizes["seed"])).values
    return d, se


def test_rnd_sets_have_higher_trace_at_every_budget(shipped):
    for exp in ("selection", "selection_digits"):
        d, se = _rnd_minus_random(shipped[exp].isel(step=0), "trace")
        assert np.all(d > 0), (exp, d)
    d, se = _rnd_minus_random(shipped["selection"].isel(step=0), "trace")
    assert np.all(d > 3 * se), (d, se)  # on mnist1d RND's sets have far larger Tr K


def test_rnd_sets_have_higher_entropy_on_digits_and_at_small_budgets_on_mnist1d(shipped):
    # digits: higher S/ln N at every budget, and over all budgets by several standard errors
    d, se = _rnd_minus_random(shipped["selection_digits"].isel(step=0), "entropy_normalized")
    assert np.all(d > 0), d
    assert d.mean() / (np.sqrt((se**2).sum()) / len(se)) > 2, (d, se)
    # mnist1d: higher at the two smallest budgets only (documented departure: from N = 30
    # on, RND's sets are no more diverse than random ones, though their trace is far higher)
    d, _ = _rnd_minus_random(shipped["selection"].isel(step=0), "entropy_normalized")
    assert np.all(d[:2] > 0), d


def test_rnd_accuracy_at_least_random_at_the_smallest_budgets_on_mnist1d(shipped):
    d, se = _rnd_minus_random(shipped["selection"].isel(step=-1), "test_accuracy")
    assert np.all(d[:2] >= 0), (d, se)
    assert np.all(d[:2] > se[:2]), (d, se)  # by more than a standard error
    # on digits the methods tie at small budgets (documented departure): |diff| < 2.5 SE
    d, se = _rnd_minus_random(shipped["selection_digits"].isel(step=-1), "test_accuracy")
    assert np.all(np.abs(d[:2]) < 2.5 * se[:2]), (d, se)


def test_entropy_accuracy_correlation_sign_when_resolved(shipped):
    s = paper.summarize(shipped)
    assert set(s["correlations"]) == {"S/lnN", "TrK", "TrK/N"}  # no subsets_cosine in the quick cube
    for key, r in s["correlations"]["S/lnN"].items():
        assert -1 <= r["rho"] <= 1 and r["low"] <= r["rho"] <= r["high"], key
        if r["resolved"] and key != "pooled_all":  # over all budgets S/ln N falls with N
            assert r["rho"] > 0, (key, r)
    # over every budget accuracy rises with Tr K, mostly through N (the paper's reading)
    assert s["correlations"]["TrK"]["pooled_all"]["low"] > 0.3, s["correlations"]["TrK"]["pooled_all"]
    text = paper.format_summary(s)
    assert "would have been detected" in text or "resolved" in text


def test_small_net_entropy_decreases_during_training(shipped):
    s = shipped["small"]["entropy_normalized"].isel(budget=0)
    delta = (s.isel(step=-1) - s.isel(step=0)).values
    assert (delta < 0).sum() >= len(delta) - 1 and delta.mean() < -0.02, delta  # fell in 6 of 6 seeds


# --------------------------------------------------------------------------- summary, figures, CLI


def test_summary_numbers_are_the_cube_means(run_out, test_cubes):
    summary = json.loads((run_out / "summary.json").read_text())
    ds = test_cubes["selection"]
    got = summary["selection"]["mnist1d"]["10"]["rnd"]["entropy_normalized"]["mean"]
    assert got == pytest.approx(
        float(ds["entropy_normalized"].sel(selection="rnd", budget=10).isel(step=0).mean()), abs=1e-4
    )
    from scipy.stats import spearmanr

    sub = test_cubes["subsets"]
    b = int(sub["budget"].values[0])
    ref = spearmanr(
        sub["entropy_normalized"].sel(budget=b).isel(step=0).values,
        sub["test_accuracy"].sel(budget=b).isel(step=-1).values,
    ).statistic
    assert summary["correlations"]["S/lnN"][str(b)]["rho"] == pytest.approx(ref, abs=1e-3)
    assert "Rank correlation" in (run_out / "summary.txt").read_text()


def test_every_figure_is_exported_and_not_blank(run_out):
    import io

    from PIL import Image, ImageStat

    for name in ("F-a1", "F-a2", "F-a3", "F-a4", "F-a5"):
        png = run_out / "figures" / f"data-{name}.png"
        with Image.open(io.BytesIO(png.read_bytes())) as im:
            assert im.size[0] > 500 and im.size[1] > 350, (name, im.size)
            assert ImageStat.Stat(im.convert("L")).stddev[0] > 10, f"{png.name} looks blank"
        assert "Bokeh" in (run_out / "figures" / f"data-{name}.html").read_text()[:200_000]


def test_figure_data_are_the_cube_values(shipped):
    d = paper.fig_a3_data(shipped, entropy="S/lnN")["sources"]["a3-entropy-lines"]
    got = dict(zip(d["label"], d["ys"], strict=True))
    ref = shipped["selection"]["entropy_normalized"].sel(selection="rnd").isel(step=0).mean("seed").values
    np.testing.assert_allclose(got["RND"], ref, rtol=1e-6)
    a4 = paper.fig_a4_data(shipped, budget=30, normalize=True)["sources"]["a4-main-lines"]
    assert all(abs(sum(y) - 1) < 1e-3 for y in a4["ys"])  # λ / Tr K sums to 1 for the mean spectrum
    with pytest.raises(ValueError, match="data_set"):
        paper.fig_a2_data(shipped, data_set="cifar")
    with pytest.raises(ValueError, match="budget"):
        paper.fig_a4_data(shipped, budget=7)


def test_workbench_every_control_redraws_in_place(shipped, tmp_path):
    wb = paper.Workbench(shipped, figures_dir=tmp_path)
    figs = dict(wb.figures)
    for ctl in wb.controls.values():
        options = getattr(ctl, "options", None)
        values = [o[1] if isinstance(o, tuple) else o for o in options] if options else [not ctl.value]
        for value in values:
            ctl.value = value
    assert all(wb.figures[n] is figs[n] for n in figs), "every control redraws in place"
    wb.data_set.value = "digits"
    lines = wb.figures["F-a2"].select_one({"name": "a2-main-lines"}).data
    ref = paper.fig_a2_data(shipped, data_set="digits", accuracy=wb.accuracy.value, seed=wb.seed.value)
    assert dict(lines) == dict(ref["sources"]["a2-main-lines"])
    assert wb.export("F-a4", "html").name == "data-F-a4.html"


def test_rerun_panel_config_and_one_small_run(tmp_path):
    panel = paper.RerunPanel(out=tmp_path / "rerun", budgets="8", repeats=1, pool=60, width=16, steps=10)
    cfg = panel.config()
    assert cfg["grid"] == {"selection": ["rnd", "random"], "budget": [8], "seed": [0]} and cfg["data"]["n_train"] == 60
    cube = panel.run(timeout=300)
    assert dict(cube.sizes)["selection"] == 2 and panel.output.children
    panel.budgets.value = "100"
    with pytest.raises(ValueError, match="pool"):
        panel.config()


def test_cli_reproduce_resumes(run_out, monkeypatch, capsys, trains_nothing):
    """A second ``reproduce`` on a finished folder trains nothing, exits 0 and leaves every
    cube as it was (the quick config is swapped for the test config already run there)."""
    import xarray as xr

    from ntkbench import cli

    monkeypatch.setitem(paper.CONFIGS, "quick", paper.CONFIGS["test"])
    before = {p: p.stat().st_mtime_ns for p in run_out.glob("runs-*/run-*.nc")}
    cubes = paper.open_cubes(run_out / "data.nc")
    trains_nothing()
    assert cli.main(["reproduce", "data", "--quick", "--out", str(run_out)]) == 0
    assert before == {p: p.stat().st_mtime_ns for p in run_out.glob("runs-*/run-*.nc")}
    assert "data: results in" in capsys.readouterr().out
    again = paper.open_cubes(run_out / "data.nc")
    assert list(again) == list(cubes)
    for name in cubes:
        xr.testing.assert_identical(again[name].drop_attrs(), cubes[name].drop_attrs())


def test_shipped_cube_is_the_quick_config(shipped):
    for name, ds in shipped.items():
        assert json.loads(ds.attrs["config"]) == paper.CONFIGS["quick"][name], (
            f"{name}: data/data_quick.nc is not the current quick config: run `make data`"
        )


def test_summary_is_strict_json(run_out, test_cubes, shipped):
    """Every number of the summary is finite or None (never NaN): summary.json is strict JSON."""
    assert_summary_is_strict_json(paper, run_out / "summary.json", test_cubes, shipped)


def test_authors_models_select_and_train_on_images(tmp_path):
    """configs(models="authors"): the authors' CNN classifier on digits images, RND with
    CNN target and predictor, and the selected sets' kernel under the CNN target; the
    mnist1d experiments (1-D signals) are left out."""
    cfgs = paper.configs("quick", models="authors")
    assert sorted(cfgs) == ["selection_digits", "selection_digits_target", "subsets"]
    for exp in ("selection_digits", "selection_digits_target"):
        cfg = cfgs[exp]
        cfg["data"].update(n_train=80, n_test=40)
        cfg["train"]["steps"] = 3
        cfg["select"]["options"]["rnd"]["steps"] = 2
        cfg["grid"] = {"selection": ["rnd"], "budget": [6], "seed": [0]}
        ds = nb.sweep(cfg, tmp_path / exp, progress=False)
        assert float(ds["entropy_normalized"].isel(step=0).squeeze()) > 0
        assert int(ds.sizes["eigen_index"]) == 6
    cube = nb.open_cube(tmp_path / "selection_digits" / "cube.nc")
    assert "CNN conv 32-64, dense 256" in _data_a1.data_note(cube)
    with pytest.raises(ValueError, match="models"):
        paper.configs("quick", models="cnn")


# --------------------------------------------------------------------------- the power run


POWER = ROOT / "data" / "data_power.nc"


@pytest.fixture(scope="module")
def power():
    if not POWER.exists():
        pytest.fail(f"{POWER} is missing: run `make data-power`")
    return paper.open_cubes(POWER)


def test_power_cube_has_the_issue_size(power):
    """≥ 2 000 subsets at each of N = 200, 500, 1 000, both kernels, every run finished,
    the top of each spectrum kept."""
    for exp in ("subsets", "subsets_cosine"):
        ds = power[exp]
        assert ds["budget"].values.tolist() == [200, 500, 1000]
        assert ds.sizes["seed"] >= 2000 and ds.sizes["eigen_index"] == 32
        assert int((ds["status"] != 0).sum()) == 0
    assert np.isfinite(power["subsets"]["test_accuracy"].isel(step=-1).values).all()
    # the same subsets and initial networks: the raw trace is the kernel's own in both
    np.testing.assert_allclose(
        power["subsets_cosine"]["trace"].isel(step=0), power["subsets"]["trace"].isel(step=0), rtol=1e-6
    )


def test_power_cube_is_tied_to_the_code(power, tmp_path):
    """Rerun four subsets of each power experiment (N = 200 and 1 000) with today's code and
    match the shipped values. At initialization everything is a float32 function of the
    subset and the initial weights (the eNTK sums 10⁵ products: rtol 1e-4 leaves room for
    another CPU's kernels). After 300 Adam steps round-off has been amplified by training:
    the loss within 1 %, and at most 3 of the 2 000 test samples may flip."""
    for exp in ("subsets", "subsets_cosine"):
        cfg = paper.configs("power")[exp]
        cfg["grid"] = {"budget": [200, 1000], "seed": [0, 1234]}
        new = nb.sweep(cfg, tmp_path / exp, progress=False)
        old = power[exp].sel(budget=[200, 1000], seed=[0, 1234])
        for var in ("entropy", "entropy_normalized", "trace"):
            np.testing.assert_allclose(new[var].isel(step=0), old[var].isel(step=0), rtol=1e-4, err_msg=var)
        top = new["eigenvalues"].isel(step=0, eigen_index=slice(0, 32))
        np.testing.assert_allclose(top, old["eigenvalues"].isel(step=0), rtol=1e-4, atol=1e-3 * float(top.max()))
        if exp == "subsets":
            np.testing.assert_allclose(new["loss"].isel(step=-1), old["loss"].isel(step=-1), rtol=1e-2)
            diff = np.abs(new["test_accuracy"].isel(step=-1) - old["test_accuracy"].isel(step=-1))
            assert float(diff.max()) <= 3 / 2000, diff.values


def test_power_summary_gives_every_budget_and_variant(power):
    s = paper.summarize(power)
    corr = s["correlations"]
    assert set(corr) == {"S/lnN", "S/lnN cosine", "TrK", "TrK/N"}
    for rows in corr.values():
        assert set(rows) == {"200", "500", "1000", "pooled_within_budget", "pooled_all"}
        for r in rows.values():
            assert r["low"] <= r["rho"] <= r["high"] and r["n"] >= 2000
            assert 0 < r["detectable"] < 0.07  # 2 000 pairs detect |ρ| ≈ 0.06
    text = paper.format_summary(s)
    assert "S / ln N of the cosine-normalised kernel" in text and "N = 1000" in text


def test_power_verdict_no_entropy_correlation_at_fixed_budget(power):
    """The verdict docs/papers/data.md states: at a fixed budget the initial entropy (raw or
    cosine-normalised) does not predict test accuracy (every interval holds 0, |ρ| below
    what 2 000 subsets detect), the trace only weakly (pooled |ρ| < 0.1); across budgets
    both follow N (|ρ| > 0.8)."""
    corr = paper.summarize(power)["correlations"]
    for variant in ("S/lnN", "S/lnN cosine"):
        for key in ("200", "500", "1000", "pooled_within_budget"):
            r = corr[variant][key]
            assert not r["resolved"] and abs(r["rho"]) < r["detectable"], (variant, key, r)
        assert corr[variant]["pooled_all"]["high"] < -0.8
    assert abs(corr["TrK"]["pooled_within_budget"]["rho"]) < 0.1
    assert corr["TrK"]["pooled_all"]["low"] > 0.8
