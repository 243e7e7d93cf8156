"""The statistics the paper summaries and figures share: power-law fits, compute
frontiers, mean ± standard error, ranks and rank correlations, and the one rule for a
number in a summary: a finite value rounded, a non-finite one ``None`` (so every
``summary.json`` is strict JSON)."""

from __future__ import annotations

import math
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


def rounded(r: Mapping[str, Any], nd: int = 4) -> dict[str, Any]:
    """A :func:`rank_correlation` result with its floats :func:`finite` (rounded, or None)."""
    return {k: (finite(v, nd) if isinstance(v, float) else v) for k, v in r.items()}
