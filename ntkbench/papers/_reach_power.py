"""The ``reach`` paper's size claim at power: Llama-style decoders (:class:`ntkbench.Decoder`)
over two decades of non-embedding parameters, the LNP terms recorded kernel-free on the
training batch (no probe spectrum), and the statistics that decide whether larger models end
with lower spectral position χ_pos (:func:`size_claim`)."""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np

from ntkbench.papers import _stats
from ntkbench.papers._base import compute, config_of, n_params

__all__ = [
    "POWER_MEASURES",
    "POWER_WIDTHS",
    "power_config",
    "non_embedding",
    "late_mean",
    "loss_of",
    "size_claim",
    "format_size_claim",
    "verdict",
]

#: the LNP terms on the training batch (Hutchinson χ_net with 4 probes) and the test loss (512
#: held-out windows): no kernel is formed, so the size is bounded by training, not by a
#: spectrum. Not ``loss``: the training set's loss at every record would cost several times
#: the training itself (16 384 windows); χ_loss is the training batch's.
POWER_MEASURES: list[str] = [
    "test_loss",
    "spectral_position",
    "chi_loss",
    "chi_net",
    "chi_net_se",
    "grad_norm_sq",
]
#: model widths; ``aspect`` 32 (layers = width // 32) and ``head_dim`` 8 keep the shape:
#: 3.4 k, 7.0 k, 12.6 k, 27.8 k, 0.10 M and 0.39 M non-embedding parameters (2.06 decades)
POWER_WIDTHS: list[int] = [16, 24, 32, 48, 64, 104]


def power_config(data: dict[str, Any], title: str, *, steps: int = 600, seeds: int = 3) -> dict[str, Any]:
    """The sweep config of one data set of the ``power`` config: every size trains on the
    same windows for ``steps`` Adam steps of 32 sequences (the same token budget), recorded
    every 30 steps (614 k tokens; the last 10 % of the steps hold 3 records)."""
    return {
        "title": f"reach: Llama-style decoders over two decades of size on {title}",
        "paper": "reach",
        "seed": 0,
        "model": {"name": "decoder", "width": POWER_WIDTHS[0], "aspect": 32, "head_dim": 8},
        "data": data,
        "train": {"optimizer": "adam", "lr": 1e-3, "steps": steps, "batch_size": 32, "loss": "ce"},
        "record": {"every": 30, "probe": 8, "measures": list(POWER_MEASURES), "lnp_probes": 4, "lnp_batch": "train"},
        "grid": {"width": list(POWER_WIDTHS), "seed": list(range(seeds))},
    }


@functools.cache
def _non_embedding(model_json: str, data_json: str) -> int:
    import jax

    from ntkbench.data import load
    from ntkbench.decoder import Decoder, non_embedding_params
    from ntkbench.models import make_model

    data = json.loads(data_json)
    options = {k: v for k, v in data.items() if k not in ("name", "n_train", "n_test", "seed")}
    ds = load(data["name"], 1, 0, seed=0, **options)
    model = make_model(json.loads(model_json), key=jax.random.key(0), in_shape=ds.in_shape, out_size=ds.n_outputs)
    if isinstance(model, Decoder):
        return non_embedding_params(model)
    emb = [getattr(model, k) for k in ("tok_embed", "pos_embed", "unembed") if hasattr(model, k)]
    from ntkbench.models import count_params

    return count_params(model) - sum(count_params(e) for e in emb)


def non_embedding(ds: Any, width: int) -> int:
    """N of the scaling laws for the cube's model at ``width``: its parameters without the
    token (and position) embeddings and the readout (:func:`ntkbench.non_embedding_params`
    for a :class:`ntkbench.Decoder`)."""
    cfg = config_of(ds)
    model = {**cfg.get("model", {}), "width": int(width)}
    return _non_embedding(json.dumps(model, sort_keys=True), json.dumps(cfg.get("data", {}), sort_keys=True))


def loss_of(ds: Any) -> str:
    """The loss variable a cube's scaling laws use: ``loss`` (the training set's), or
    ``test_loss`` where the training loss was not recorded (the ``power`` config)."""
    return "loss" if "loss" in ds else "test_loss"


def late_mean(da: Any, fraction: float = 0.1) -> Any:
    """``da`` averaged over the records in the last ``fraction`` of the steps (step ≥ (1 -
    fraction) · last step): the end of a noisy training-batch measure."""
    steps = np.asarray(da["step"].values, float)
    return da.isel(step=np.flatnonzero(steps >= (1 - fraction) * steps.max())).mean("step")


def _slope_boot(logn: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> tuple[float, np.ndarray]:
    """The least-squares slope of the seed means of log y (widths × seeds) against log N,
    and ``n_boot`` slopes with the seeds of each width resampled."""
    ly = np.log(y)
    slope = float(np.polyfit(logn, np.nanmean(ly, axis=1), 1)[0])
    rng = np.random.default_rng(seed)
    n_w, n_s = ly.shape
    picks = rng.integers(0, n_s, (n_boot, n_w, n_s))
    means = np.nanmean(np.take_along_axis(np.broadcast_to(ly, (n_boot, n_w, n_s)), picks, axis=2), axis=2)
    boots = np.polyfit(logn, means.T, 1)[0]
    return slope, boots


def _trend(ds: Any, var: str, logn: np.ndarray, n_boot: int) -> dict[str, Any]:
    """Final ``var`` (:func:`late_mean`) against log N: slope of the log–log fit with a 95 %
    bootstrap interval over seeds, whether it excludes 0, the smallest |slope| it would have
    resolved (the interval's half-width), and the rank correlation over every run."""
    y = late_mean(ds[var]).transpose("width", "seed").values.astype(float)
    slope, boots = _slope_boot(logn, y, n_boot, seed=len(var))
    low, high = (float(v) for v in np.quantile(boots, [0.025, 0.975]))
    widths = np.repeat(logn, y.shape[1])
    rank = _stats.rank_correlation(widths, y.ravel(), n_boot=n_boot, seed=1)
    return {
        "slope": _stats.finite(slope, 4),
        "low": _stats.finite(low, 4),
        "high": _stats.finite(high, 4),
        "resolved": bool(low > 0 or high < 0),
        "resolvable": _stats.finite((high - low) / 2, 4),
        "rank": _stats.rounded(rank),
        "final": [[_stats.sig(v) for v in row] for row in y],
    }


def size_claim(ds: Any, n_boot: int = 2000) -> dict[str, Any]:
    """Does a larger model end with lower χ_pos (and loss)? For a language-model cube with a
    ``width`` grid and seeds: per width the non-embedding and total parameters; ``pos`` and
    ``loss`` (:func:`_trend` of χ_pos and the loss, :func:`loss_of`); ``chi_net_growth``: χ_net at
    the end over χ_net at the start, per width and seed (claim 3: feature learning amplifies
    gradient magnitudes); ``frontier``: the power law of the compute frontier of the loss
    (compute 6·N·D with N the non-embedding parameters) and the decades of compute it spans."""
    widths = [int(w) for w in ds["width"].values]
    n_non = np.array([non_embedding(ds, w) for w in widths], float)
    logn = np.log(n_non)
    growth = (late_mean(ds["chi_net"]) / ds["chi_net"].isel(step=0)).transpose("width", "seed").values
    curves = []
    for w, n in zip(widths, n_non, strict=True):
        c = compute(ds, w) * n / n_params(ds, w)  # 6·N·D with the non-embedding N
        loss = np.asarray(_stats.seed_mean(ds[loss_of(ds)].sel(width=w)).values, float)
        curves.append((c[1:], loss[1:]))
    fx, fy = _stats.frontier(curves)
    fit = _stats.power_fit(fx, fy)
    return {
        "widths": widths,
        "non_embedding_params": [int(v) for v in n_non],
        "params": [n_params(ds, w) for w in widths],
        "decades_of_size": _stats.finite(float(np.log10(n_non.max() / n_non.min())), 3),
        "n_seeds": int(ds.sizes["seed"]),
        "pos": _trend(ds, "spectral_position", logn, n_boot),
        "loss": _trend(ds, loss_of(ds), logn, n_boot),
        "loss_variable": loss_of(ds),
        "chi_net_growth": [[_stats.sig(v) for v in row] for row in growth],
        "chi_net_grew": int(np.sum(growth > 1)),
        "n_runs": int(growth.size),
        "frontier": None if fit is None else {"b": _stats.finite(fit[1], 4), "r2": _stats.finite(fit[2], 4)},
        "frontier_decades": _stats.finite(float(np.log10(fx.max() / fx.min())), 3) if len(fx) else None,
    }


def verdict(claim: dict[str, Any]) -> str:
    """The size claim's verdict in one sentence."""
    p, n = claim["pos"], claim["decades_of_size"]
    interval = f"slope {p['slope']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}] of log χ_pos against log N"
    if p["resolved"] and p["slope"] < 0:
        return f"Reproduced: over {n} decades of size larger models end with lower χ_pos ({interval})."
    if p["resolved"]:
        return f"Not reproduced: over {n} decades of size larger models end with HIGHER χ_pos ({interval})."
    return (
        f"Not reproduced at this power: over {n} decades of size the {interval} holds 0; "
        f"a slope of ±{p['resolvable']:.3f} would have been resolved."
    )


def format_size_claim(label: str, claim: dict[str, Any]) -> list[str]:
    """The lines of :func:`size_claim` in a plain-text summary."""
    fmt = _stats.fmt
    sizes = ", ".join(f"{w}: {n}" for w, n in zip(claim["widths"], claim["non_embedding_params"], strict=True))
    lines = [
        f"Size claim on {label} ({claim['n_seeds']} seeds; non-embedding parameters by width: {sizes})",
        "  " + verdict(claim),
    ]
    loss_name = "training loss" if claim["loss_variable"] == "loss" else "test loss"
    for name, key in (("χ_pos", "pos"), (loss_name, "loss")):
        t = claim[key]
        r = t["rank"]
        lines.append(
            f"  final {name} (mean of the last 10 % of steps) vs N: slope {fmt(t['slope'], '+.3f')} "
            f"[{fmt(t['low'], '+.3f')}, {fmt(t['high'], '+.3f')}]; rank correlation ρ = {fmt(r['rho'], '+.2f')} "
            f"[{fmt(r['low'], '+.2f')}, {fmt(r['high'], '+.2f')}]"
        )
    fr = claim["frontier"] or {}
    lines.append(
        f"  compute frontier (6·N·D, N non-embedding) over {claim['frontier_decades']} decades: L ∝ C^{fr.get('b')}, "
        f"R² = {fr.get('r2')}"
    )
    lines.append(f"  χ_net grew from the start to the end in {claim['chi_net_grew']} of {claim['n_runs']} runs")
    return [*lines, ""]
