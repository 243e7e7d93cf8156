"""Fits with uncertainty for the paper summaries: a power law with a bootstrap interval on
its exponent, a two-segment (broken) power law with a bootstrap interval on its break, and
a permutation test of whether points group by label (a between/within dispersion ratio).

The bootstraps resample *seeds*: at every x the runs (one per seed) are drawn with
replacement and averaged, and the fit is repeated on those means; intervals are the
percentiles of the refitted values. With three seeds this is coarse, and the interval says
how far the seeds alone move the fit, not the error of a law beyond the measured range.
All draws come from ``numpy.random.default_rng(seed)``: the numbers are reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["bootstrap_power_fit", "broken_power_fit", "broken_curve", "separation_test"]


def _check(x: Any, runs: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, float)
    runs = np.asarray(runs, float)
    if runs.ndim == 1:
        runs = runs[:, None]
    if runs.ndim != 2 or runs.shape[0] != x.shape[0]:
        raise ValueError(f"runs must have shape (len(x), n_seeds) = ({x.shape[0]}, …), got {runs.shape}")
    if not (np.all(np.isfinite(x)) and np.all(x > 0)):
        raise ValueError(f"x must be finite and positive, got {x.tolist()}")
    return x, runs


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """The mean of the finite values along ``axis``; NaN (and no warning) where there are none
    (a diverged run is NaN, and a resampling may draw only it)."""
    ok = np.isfinite(a)
    count = ok.sum(axis=axis)
    total = np.where(ok, a, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _resampled_means(runs: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_x) means of seeds drawn with replacement at every x (NaN runs ignored)."""
    n_x, n_s = runs.shape
    idx = rng.integers(0, n_s, size=(n_boot, n_x, n_s))
    draws = np.take_along_axis(np.broadcast_to(runs, (n_boot, n_x, n_s)), idx, axis=2)
    return _nanmean(draws, axis=2)


def _line_fits(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares (intercept, slope) of every row of v (…, n) against u (n,)."""
    uc = u - u.mean()
    slope = (v - v.mean(axis=-1, keepdims=True)) @ uc / (uc @ uc)
    return v.mean(axis=-1) - slope * u.mean(), slope


def bootstrap_power_fit(x: Any, runs: Any, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """``y = a · x^b`` fitted in log–log on the seed means of ``runs`` (n_x, n_seeds), with
    the ``level`` percentile interval of b over ``n_boot`` resamplings of the seeds.

    Returns ``{"exponent", "prefactor", "r2", "low", "high", "level", "n_boot",
    "exponent_per_seed"}`` (NaN where the values are not positive).

    >>> x = [1.0, 2.0, 4.0, 8.0]
    >>> runs = [[1.0, 1.1], [0.5, 0.55], [0.25, 0.27], [0.125, 0.14]]
    >>> f = bootstrap_power_fit(x, runs)
    >>> round(f["exponent"], 2), f["low"] <= f["exponent"] <= f["high"]
    (-1.0, True)
    """
    x, runs = _check(x, runs)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    nan = {"exponent": np.nan, "prefactor": np.nan, "r2": np.nan, "low": np.nan, "high": np.nan}
    mean = _nanmean(runs, axis=1)
    if not np.all(mean > 0) or x.size < 3:
        return {**nan, "level": level, "n_boot": n_boot, "exponent_per_seed": []}
    u, v = np.log(x), np.log(mean)
    a, b = _line_fits(u, v)
    r2 = 1.0 - np.sum((v - a - b * u) ** 2) / np.sum((v - v.mean()) ** 2)
    boots = _resampled_means(runs, n_boot, np.random.default_rng(seed))
    with np.errstate(invalid="ignore", divide="ignore"):
        _, slopes = _line_fits(u, np.log(boots))
    slopes = slopes[np.isfinite(slopes)]
    lo, hi = np.percentile(slopes, [50 * (1 - level), 50 * (1 + level)]) if slopes.size else (np.nan, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        _, per_seed = _line_fits(u, np.log(runs.T))
    return {
        "exponent": float(b),
        "prefactor": float(np.exp(a)),
        "r2": float(r2),
        "low": float(lo),
        "high": float(hi),
        "level": level,
        "n_boot": n_boot,
        "exponent_per_seed": [float(s) for s in per_seed],
    }


def _two_segments(u: np.ndarray, v: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every row of v (B, n): the break u_b of ``grid`` with the least squared error of
    the continuous fit v = c + s1·min(u − u_b, 0) + s2·max(u − u_b, 0), and its (c, s1, s2)."""
    lo = np.minimum(u[None, :] - grid[:, None], 0.0)  # (G, n)
    hi = np.maximum(u[None, :] - grid[:, None], 0.0)
    design = np.stack([np.ones_like(lo), lo, hi], axis=-1)  # (G, n, 3)
    pinv = np.linalg.pinv(design)  # (G, 3, n)
    coef = np.einsum("gkn,bn->bgk", pinv, v)  # (B, G, 3)
    resid = v[:, None, :] - np.einsum("gnk,bgk->bgn", design, coef)
    best = np.argmin(np.sum(resid**2, axis=-1), axis=1)
    return grid[best], coef[np.arange(v.shape[0]), best]


def broken_power_fit(
    x: Any, runs: Any, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95, n_grid: int = 120
) -> dict[str, Any]:
    """A two-segment power law: log y continuous and piecewise linear in log x, with a
    break x_b searched on a log grid between the second and the second-to-last x (each
    segment holds at least two points), fitted on the seed means of ``runs`` (n_x, n_seeds);
    and the ``level`` percentile intervals of x_b and of the slope change over ``n_boot``
    resamplings of the seeds.

    A break is ``resolved`` when the slope-change interval excludes 0 *and* the two
    segments beat one line by the Bayesian information criterion (two more parameters:
    the break and the second slope). Otherwise the data show no transition at this
    resolution, and ``break`` is still the best break, for what it is worth.

    Returns ``{"break", "break_low", "break_high", "slope_below", "slope_above",
    "slope_change_low", "slope_change_high", "delta_bic", "resolved", "level", "n_boot"}``
    (``break`` etc. None below 5 points or with non-positive values).

    >>> x = np.array([1, 2, 4, 8, 16, 32, 64.0])
    >>> y = np.minimum(x, 8.0) ** -1.0          # falls as 1/x, then flat from x = 8
    >>> f = broken_power_fit(x, np.stack([y, 1.02 * y, 0.98 * y], axis=1))
    >>> round(f["break"]), f["resolved"], round(f["slope_below"], 1), abs(round(f["slope_above"], 1))
    (8, True, -1.0, 0.0)
    """
    x, runs = _check(x, runs)
    none = {
        "break": None, "break_low": None, "break_high": None, "slope_below": None, "slope_above": None,
        "slope_change_low": None, "slope_change_high": None, "delta_bic": None, "resolved": False,
    }  # fmt: skip
    mean = _nanmean(runs, axis=1)
    order = np.argsort(x)
    x, runs, mean = x[order], runs[order], mean[order]
    if x.size < 5 or not np.all(mean > 0):
        return {**none, "level": level, "n_boot": n_boot}
    u, v = np.log(x), np.log(mean)
    grid = np.linspace(u[1], u[-2], n_grid)
    ub, coef = _two_segments(u, v[None, :], grid)
    c, s1, s2 = coef[0]
    n = u.size
    a, b = _line_fits(u, v)
    sse1 = float(np.sum((v - a - b * u) ** 2))
    fit2 = c + s1 * np.minimum(u - ub[0], 0) + s2 * np.maximum(u - ub[0], 0)
    sse2 = float(np.sum((v - fit2) ** 2))
    tiny = 1e-12 * max(float(np.sum((v - v.mean()) ** 2)), 1e-300)
    delta_bic = n * np.log(max(sse2, tiny) / max(sse1, tiny)) + 2 * np.log(n)
    boots = _resampled_means(runs, n_boot, np.random.default_rng(seed))
    ok = np.all(boots > 0, axis=1)  # False where a resampling drew only NaN runs at some x
    q = [50 * (1 - level), 50 * (1 + level)]
    if ok.any():
        bub, bcoef = _two_segments(u, np.log(boots[ok]), grid)
        blo, bhi = np.exp(np.percentile(bub, q))
        dlo, dhi = np.percentile(bcoef[:, 2] - bcoef[:, 1], q)
    else:
        blo = bhi = dlo = dhi = np.nan
    return {
        "break": float(np.exp(ub[0])),
        "break_low": float(blo),
        "break_high": float(bhi),
        "slope_below": float(s1),
        "slope_above": float(s2),
        "slope_change_low": float(dlo),
        "slope_change_high": float(dhi),
        "delta_bic": float(delta_bic),
        "resolved": bool((dlo > 0 or dhi < 0) and delta_bic < 0),
        "level": level,
        "n_boot": n_boot,
        "log_y_at_break": float(c),
    }


def broken_curve(fit: Mapping[str, Any], x: Any) -> np.ndarray:
    """The two-segment power law of :func:`broken_power_fit` evaluated at ``x``."""
    u = np.log(np.asarray(x, float)) - np.log(fit["break"])
    return np.exp(fit["log_y_at_break"] + fit["slope_below"] * np.minimum(u, 0) + fit["slope_above"] * np.maximum(u, 0))


def _pseudo_f(z: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Between/within dispersion ratio (PERMANOVA's pseudo-F) of points z (n, d) for every
    row of group codes (P, n)."""
    n = z.shape[0]
    total = np.sum((z - z.mean(axis=0)) ** 2)
    counts = np.stack([np.sum(codes == g, axis=-1) for g in range(n_groups)], axis=-1)  # (P, G)
    sums = np.stack([(codes == g).astype(float) @ z for g in range(n_groups)], axis=-2)  # (P, G, d)
    between = np.sum(np.sum(sums**2, axis=-1) / np.maximum(counts, 1), axis=-1) - n * np.sum(z.mean(axis=0) ** 2)
    within = total - between
    return (between / (n_groups - 1)) / (within / (n - n_groups))


def separation_test(points: Any, labels: Any, *, n_perm: int = 9999, seed: int = 0) -> dict[str, Any]:
    """Whether ``points`` (n, d) group by ``labels`` (n,): the pseudo-F ratio of the
    between-group to the within-group dispersion of the standardised points (each column
    z-scored, so no unit dominates), and its permutation p-value, (1 + #{F_perm ≥ F}) /
    (1 + n_perm) over ``n_perm`` shufflings of the labels. Also the fraction of the
    dispersion between the groups (R²).

    >>> rng = np.random.default_rng(0)
    >>> pts = np.concatenate([rng.normal(0, 1, (6, 2)), rng.normal(5, 1, (6, 2))])
    >>> r = separation_test(pts, [0] * 6 + [1] * 6, n_perm=999)
    >>> r["p_value"] <= 0.002, r["r2"] > 0.8
    (True, True)
    """
    z = np.asarray(points, float)
    labels = np.asarray(labels)
    if z.ndim != 2 or labels.shape != (z.shape[0],):
        raise ValueError(f"points must be (n, d) and labels (n,), got {z.shape} and {labels.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("points must be finite")
    groups, codes = np.unique(labels, return_inverse=True)
    g, n = groups.size, z.shape[0]
    if not 2 <= g < n:
        raise ValueError(f"labels must name at least 2 groups and fewer groups than points, got {g} for {n}")
    sd = z.std(axis=0)
    z = (z - z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    f_obs = float(_pseudo_f(z, codes[None, :], g)[0])
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(codes) for _ in range(n_perm)])
    f_perm = np.concatenate([_pseudo_f(z, chunk, g) for chunk in np.array_split(perms, max(1, n_perm // 2000))])
    between_share = f_obs * (g - 1) / (f_obs * (g - 1) + (n - g))
    return {
        "pseudo_f": f_obs,
        "p_value": float((1 + np.sum(f_perm >= f_obs)) / (1 + n_perm)),
        "r2": float(between_share),
        "n_perm": int(n_perm),
        "n_points": int(n),
        "n_groups": int(g),
    }
