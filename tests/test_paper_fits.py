"""ntkbench.papers._fits against independent references: the bootstrap power law's
exponent is NumPy's log–log polyfit and its interval covers a planted exponent; the
two-segment fit finds a planted break (and resolves none on a straight power law); the
separation test's pseudo-F is the textbook between/within ratio computed by loops, its
p-value small for separated groups and not for shuffled ones."""

from __future__ import annotations

import numpy as np
import pytest

from ntkbench.papers import _fits


def _noisy(y, n_seeds=3, sd=0.03, seed=0):
    rng = np.random.default_rng(seed)
    return np.asarray(y)[:, None] * np.exp(rng.normal(0, sd, (len(y), n_seeds)))


def test_bootstrap_power_fit_is_the_loglog_polyfit_with_a_covering_interval():
    x = np.array([8, 16, 32, 64, 128, 256, 512.0])
    runs = _noisy(2.0 * x**-0.4)
    f = _fits.bootstrap_power_fit(x, runs, n_boot=500)
    slope, icpt = np.polyfit(np.log(x), np.log(runs.mean(axis=1)), 1)
    assert f["exponent"] == pytest.approx(slope, abs=1e-10)
    assert f["prefactor"] == pytest.approx(np.exp(icpt), rel=1e-10)
    assert f["low"] < -0.4 < f["high"] and f["high"] - f["low"] < 0.1  # 3 % noise per run
    assert len(f["exponent_per_seed"]) == 3
    assert _fits.bootstrap_power_fit(x, runs, n_boot=500) == f  # a fixed seed: reproducible
    with pytest.raises(ValueError, match="runs must have shape"):
        _fits.bootstrap_power_fit(x, runs[:3])
    with pytest.raises(ValueError, match="x must be finite and positive"):
        _fits.bootstrap_power_fit(-x, runs)


def test_broken_power_fit_finds_a_planted_break_and_none_on_a_straight_law():
    x = np.array([8, 16, 32, 64, 128, 256, 512.0])
    bent = _noisy(np.where(x < 64, (x / 64) ** -0.8, (x / 64) ** -0.1))
    f = _fits.broken_power_fit(x, bent, n_boot=400)
    assert f["resolved"] and 40 < f["break"] < 100, f
    assert f["break_low"] <= f["break"] <= f["break_high"]
    assert f["slope_below"] == pytest.approx(-0.8, abs=0.1) and f["slope_above"] == pytest.approx(-0.1, abs=0.1)
    np.testing.assert_allclose(_fits.broken_curve(f, x), bent.mean(axis=1), rtol=0.05)
    straight = _fits.broken_power_fit(x, _noisy(x**-0.5, seed=1), n_boot=400)
    assert not straight["resolved"], straight
    assert _fits.broken_power_fit(x[:4], bent[:4])["break"] is None  # too few points for two segments


def _pseudo_f_loops(z, labels):
    groups = sorted(set(labels))
    grand = z.mean(axis=0)
    between = sum(np.sum(labels == g) * np.sum((z[labels == g].mean(axis=0) - grand) ** 2) for g in groups)
    within = sum(np.sum((z[labels == g] - z[labels == g].mean(axis=0)) ** 2) for g in groups)
    k, n = len(groups), len(labels)
    return (between / (k - 1)) / (within / (n - k))


def test_separation_test_is_the_between_within_ratio_with_a_permutation_p_value():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.array(["a", "b", "c"]), 6)
    pts = rng.normal(0, 1, (18, 2)) + np.repeat([[0, 0], [3, 0], [0, 30]], 6, axis=0)
    r = _fits.separation_test(pts, labels, n_perm=999)
    z = (pts - pts.mean(axis=0)) / pts.std(axis=0)  # standardised, as the test does
    assert r["pseudo_f"] == pytest.approx(_pseudo_f_loops(z, labels), rel=1e-10)
    assert r["p_value"] == pytest.approx(1 / 1000)  # no shuffle beats separated groups
    shuffled = _fits.separation_test(pts, rng.permutation(labels), n_perm=999)
    assert shuffled["p_value"] > 0.05 and shuffled["r2"] < r["r2"]
    with pytest.raises(ValueError, match="at least 2 groups"):
        _fits.separation_test(pts, ["a"] * 18)
    with pytest.raises(ValueError, match="points must be"):
        _fits.separation_test(pts[:, 0], labels)
