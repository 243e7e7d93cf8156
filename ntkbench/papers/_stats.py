"""The statistics the paper summaries and figures share: power-law fits, compute
frontiers, mean ± standard error, ranks and rank correlations, and the one rule for a
number in a summary: a finite value rounded, a non-finite one ``None`` (so every
``summary.json`` is strict JSON)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "finite",
    "sig",
    "as_float",
    "fmt",
    "mean_of",
    "strict",
    "seed_mean",
    "mean_se",
    "mean_se_by",
    "power_fit",
    "power_fit_dict",
    "power_law_crossing",
    "frontier",
    "ranks",
    "rank_correlation",
    "detectable_rho",
    "rounded",
]


def finite(v: Any, nd: int = 4) -> float | None:
    """``v`` rounded to ``nd`` decimals; ``None`` if it is not finite (NaN, ±inf).

    >>> finite(1.234567), finite(float("nan"))
    (1.2346, None)
    """
    v = float(v)
    return round(v, nd) if math.isfinite(v) else None


def sig(v: Any, digits: int = 4) -> float | None:
    """``v`` to ``digits`` significant digits; ``None`` if it is not finite.

    >>> sig(123456.0), sig(float("inf"))
    (123500.0, None)
    """
    v = float(v)
    return float(f"{v:.{digits}g}") if math.isfinite(v) else None


def as_float(v: Any) -> float:
    """A summary number back as a float: ``None`` (not finite) as NaN."""
    return float("nan") if v is None else float(v)


def fmt(v: Any, spec: str) -> str:
    """``format(v, spec)`` of a summary number, ``None`` written as NaN is (``"nan"``).

    >>> fmt(0.5, "+.2f"), fmt(None, "+.2f")
    ('+0.50', '+nan')
    """
    return format(as_float(v), spec)


def mean_of(values: Sequence[Any]) -> float:
    """The mean of summary numbers (``None`` counted as NaN)."""
    return float(np.mean([as_float(v) for v in values]))


def strict(obj: Any) -> Any:
    """``obj`` (dicts, lists, numbers) with every non-finite float as ``None``: what
    ``json.dumps(..., allow_nan=False)`` accepts."""
    if isinstance(obj, Mapping):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def seed_mean(da: Any) -> Any:
    """The mean of a DataArray over its ``seed`` dim; ``da`` itself when it has none."""
    return da.mean("seed") if "seed" in da.dims else da


def mean_se(a: Any, nd: int = 5) -> dict[str, Any]:
    """``{"mean", "se", "n"}`` of the finite values of ``a``: the mean and its standard
    error (``None`` below one and two values).

    >>> mean_se([1.0, 2.0, 3.0, float("nan")])
    {'mean': 2.0, 'se': 0.57735, 'n': 3}
    """
    a = np.asarray(a, float).ravel()
    a = a[np.isfinite(a)]
    se = float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else float("nan")
    return {"mean": finite(a.mean(), nd) if a.size else None, "se": finite(se, nd), "n": int(a.size)}


def mean_se_by(da: Any, dim: str, nd: int = 5) -> dict[str, dict[str, Any]]:
    """``{str(int(value)): mean_se(da at value)}`` for each value of integer dim ``dim``
    of a DataArray (e.g. one entry per width, over seeds)."""
    return {str(int(v)): mean_se(da.sel({dim: v}).values, nd) for v in da[dim].values}


def power_fit(x: Any, y: Any, min_points: int = 3) -> tuple[float, float, float] | None:
    """``(a, b, r2)`` of ``y = a · x^b`` fitted on the points with finite, positive x and
    y (:func:`ntkbench.plots.power_law_fit`); None below ``min_points`` such points."""
    from ntkbench import plots

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < max(2, min_points):
        return None
    return plots.power_law_fit(x[ok], y[ok])


def power_fit_dict(x: Any, y: Any) -> dict[str, float]:
    """:func:`power_fit` of two or more points as ``{"prefactor", "exponent", "r2"}`` (NaN
    below two finite, positive points)."""
    fit = power_fit(x, y, min_points=2)
    a, b, r2 = fit if fit is not None else (float("nan"),) * 3
    return {"prefactor": a, "exponent": b, "r2": r2}


def power_law_crossing(prefactor: float, exponent: float, level: float) -> float:
    """The x at which a falling power law ``prefactor · x^exponent`` reaches ``level``;
    NaN when it does not fall (or a value is not finite or not positive).

    >>> round(power_law_crossing(1.0, -0.5, 0.1), 6)
    100.0
    """
    a, b = prefactor, exponent
    if not (np.isfinite(a) and np.isfinite(b)) or b >= 0 or a <= 0 or level <= 0:
        return float("nan")
    return float((level / a) ** (1.0 / b))


def frontier(points: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The lower envelope of (compute, loss) curves: at each compute the lowest loss any
    model reached by then."""
    x = np.concatenate([p[0] for p in points])
    y = np.concatenate([p[1] for p in points])
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    if not ok.any():
        return np.array([]), np.array([])
    order = np.argsort(x[ok])
    xs, ys = x[ok][order], np.minimum.accumulate(y[ok][order])
    keep = np.concatenate([[True], np.diff(ys) < 0])  # the points where the envelope drops
    return xs[keep], ys[keep]


def ranks(a: Any) -> Any:
    """Ranks 0 … n-1 of a 1-D array, ties sharing their average rank.

    >>> ranks([3.0, 1.0, 3.0]).tolist()
    [1.5, 0.0, 1.5]
    """
    a = np.asarray(a, dtype=float)
    order = np.argsort(a, kind="mergesort")
    r = np.empty(len(a))
    r[order] = np.arange(len(a))
    _, inverse = np.unique(a, return_inverse=True)
    return (np.bincount(inverse, r) / np.bincount(inverse))[inverse]


def _centred_rank_sums(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each row of ``idx`` (B, n) (a resample of the pairs ``x``, ``y``), the sums
    Σ rx·ry, Σ rx², Σ ry² of the resample's centred average ranks (ties share their mean
    rank), each (B,). Ranks come from counts per distinct value, so one call ranks every row
    (no per-row sort): a value chosen c times after b smaller ones has rank b + (c - 1) / 2."""
    B, n = idx.shape
    rows = np.arange(B)[:, None]

    def centred(v: np.ndarray) -> np.ndarray:
        _, inv = np.unique(v, return_inverse=True)
        u = int(inv.max()) + 1
        pick = inv[idx]  # (B, n) the distinct-value id of each drawn pair
        cnt = np.bincount((pick + u * rows).ravel(), minlength=B * u).reshape(B, u)
        rank = np.cumsum(cnt, axis=1) - cnt + (cnt - 1) / 2 - (n - 1) / 2
        return np.take_along_axis(rank, pick, axis=1)

    rx, ry = centred(x), centred(y)
    return (rx * ry).sum(1), (rx * rx).sum(1), (ry * ry).sum(1)


def rank_correlation(
    x: Any, y: Any, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0, groups: Any = None
) -> dict[str, Any]:
    """Spearman's rank correlation of ``x`` and ``y`` with a percentile bootstrap interval.

    ``groups`` (optional, same length): ranks are taken within each group (e.g. each data
    budget) and pooled, so a correlation that only reflects the group sizes does not count
    (each group's mean is removed from both). Resampling is over pairs (within each group
    when grouped), ``n_boot`` times with a fixed ``seed``. NaN pairs are dropped. Returns
    ``{"rho", "low", "high", "n", "resolved", "detectable"}``: ``resolved`` when the interval
    excludes 0; ``detectable`` the smallest |ρ| these n pairs detect (:func:`detectable_rho`;
    ``rho`` NaN below 3 pairs).

    >>> r = rank_correlation([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5])
    >>> round(r["rho"], 3), r["resolved"]  # six pairs: the interval still holds 0
    (0.829, False)
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    g = np.zeros(len(x)) if groups is None else np.asarray(groups)
    if not (len(x) == len(y) == len(g)):
        raise ValueError(f"x, y and groups must have the same length, got {len(x)}, {len(y)}, {len(g)}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, g = x[ok], y[ok], g[ok]
    members = [np.flatnonzero(g == v) for v in np.unique(g)]
    out: dict[str, Any] = {
        "rho": float("nan"),
        "low": float("nan"),
        "high": float("nan"),
        "n": int(len(x)),
        "resolved": False,
        "detectable": detectable_rho(len(x) - len(members) + 1),
    }
    if len(x) < 3:
        return out
    rng = np.random.default_rng(seed)
    # the draws in the order one resample after another, each group's in turn
    draws = [[rng.integers(0, len(i), len(i)) for i in members] for _ in range(n_boot)]
    sxy, sxx, syy = np.zeros(n_boot + 1), np.zeros(n_boot + 1), np.zeros(n_boot + 1)
    for k, i in enumerate(members):  # row 0: the data themselves
        idx = np.vstack([np.arange(len(i))] + [d[k] for d in draws])
        for a, b in ((0, n_boot // 2 + 1), (n_boot // 2 + 1, n_boot + 1)):  # two halves: memory
            parts = _centred_rank_sums(x[i], y[i], idx[a:b])
            sxy[a:b] += parts[0]
            sxx[a:b] += parts[1]
            syy[a:b] += parts[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        rhos = np.where((sxx > 0) & (syy > 0), sxy / np.sqrt(sxx * syy), np.nan)
    out["rho"] = float(rhos[0])
    boots = rhos[1:][np.isfinite(rhos[1:])]
    if boots.size:
        alpha = (1 - level) / 2
        out["low"], out["high"] = (float(v) for v in np.quantile(boots, [alpha, 1 - alpha]))
        out["resolved"] = bool(out["low"] > 0 or out["high"] < 0)
    return out


def detectable_rho(n: int, *, level: float = 0.95, power: float = 0.8) -> float:
    """The smallest |Spearman ρ| that ``n`` pairs detect: a two-sided test at ``level``
    rejects ρ = 0 with probability ``power``. Fisher's z with Spearman's variance
    1.06 / (n - 3) (Fieller, Hartley & Pearson 1957): tanh((z_{1-α/2} + z_power) ·
    √(1.06 / (n - 3))). NaN below 4 pairs.

    >>> round(detectable_rho(2000), 3), round(detectable_rho(100), 3)
    (0.064, 0.285)
    """
    if n < 4:
        return float("nan")
    z = statistics.NormalDist().inv_cdf
    return float(np.tanh((z(1 - (1 - level) / 2) + z(power)) * np.sqrt(1.06 / (n - 3))))


def rounded(r: Mapping[str, Any], nd: int = 4) -> dict[str, Any]:
    """A :func:`rank_correlation` result with its floats :func:`finite` (rounded, or None)."""
    return {k: (finite(v, nd) if isinstance(v, float) else v) for k, v in r.items()}
