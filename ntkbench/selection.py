"""Training-data selection: choose ``budget`` points of a pool (papers/data.md).

:func:`select` checks its arguments once and hands the pool to one method:

- ``"random"``: uniform without replacement;
- ``"rnd"``: random network distillation, a greedy loop compiled as one function;
- ``"max_entropy"``: the random subset whose eNTK has the largest von Neumann entropy.

This module sits above :mod:`ntkbench.data` (which only makes and loads arrays) because the
methods build models (:mod:`ntkbench.models`) and kernels (:mod:`ntkbench.kernel`,
:mod:`ntkbench.measures`). A method is one function ``run(pool, budget, key, options)``
registered in ``_METHODS`` with the defaults of its options; adding a method is one
function and one entry there.

Example
-------
>>> import numpy as np, ntkbench as nb
>>> pool = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
>>> idx = nb.select(pool, 5, "random", seed=0)
>>> idx.shape, len(set(idx.tolist()))
((5,), 5)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ntkbench._checks import check_float, check_int, check_options
from ntkbench.kernel import entk
from ntkbench.measures import entropy, spectrum
from ntkbench.models import CNN, MLP

__all__ = ["rnd_target", "select", "METHODS"]


@dataclasses.dataclass(frozen=True)
class _Pool:
    """The checked pool: ``x`` (N, D) float32, one flattened sample per row (finite);
    ``raw`` the pool as given, (N, ...)."""

    x: np.ndarray
    raw: np.ndarray


class _Method(NamedTuple):
    run: Callable[[_Pool, int, PRNGKeyArray, dict[str, Any]], np.ndarray]
    defaults: dict[str, Any]  # its options and their defaults


# --------------------------------------------------------------------------- random


def _random(pool: _Pool, budget: int, key: PRNGKeyArray, opts: dict[str, Any]) -> np.ndarray:
    idx = jax.random.choice(key, len(pool.x), (budget,), replace=False)
    return np.asarray(idx, np.int64)


# --------------------------------------------------------------------------- RND


@eqx.filter_jit
def _rnd_select(
    pool: Float[Array, "n d"],
    first: Int[Array, ""],
    predictor: MLP | CNN,
    target_out: Float[Array, "n k"],
    budget: int,
    steps: int,
    lr: float,
    batch: int,
    key: PRNGKeyArray,
) -> Int[Array, " budget"]:
    """Greedy RND selection, one compiled loop (see :func:`select`).

    The predictor trains on ``batch`` rows: all chosen points (padded and masked) while at
    most ``batch`` are chosen, then a uniform draw of ``batch`` of them per Adam step, so
    an addition costs O(batch) rows instead of O(budget)."""
    n = pool.shape[0]
    params, static = eqx.partition(predictor, eqx.is_inexact_array)
    opt = optax.adam(lr)
    chosen = jnp.zeros(budget, jnp.int32).at[0].set(first)
    taken = jnp.zeros(n, bool).at[first].set(True)
    rows = jnp.arange(batch)

    def loss(p: Any, xs: Any, ts: Any, w: Any) -> Any:
        out = jax.vmap(eqx.combine(p, static))(xs)
        return jnp.sum(w * jnp.mean((out - ts) ** 2, axis=-1)) / jnp.sum(w)

    def add_one(i: Any, carry: Any) -> Any:
        p, state, chosen, taken = carry
        keys = jax.random.split(jax.random.fold_in(key, i), steps if steps > 0 else 1)

        # retrain the predictor on the i points chosen so far (not before the first pick)
        def step(t: Any, c: Any) -> Any:
            p, state = c
            drawn = jax.random.randint(keys[t], (batch,), 0, i)
            take = jnp.where(i <= batch, jnp.minimum(rows, budget - 1), drawn)
            w = jnp.where(i <= batch, rows < i, True).astype(pool.dtype)
            xs, ts = pool[chosen[take]], target_out[chosen[take]]
            g = jax.grad(loss)(p, xs, ts, w)
            updates, state = opt.update(g, state, p)
            return optax.apply_updates(p, updates), state

        p, state = jax.lax.fori_loop(0, jnp.where(i > 1, steps, 0), step, (p, state))
        pred = jax.vmap(eqx.combine(p, static))(pool)
        score = jnp.mean((pred - target_out) ** 2, axis=-1)
        j = jnp.argmax(jnp.where(taken, -jnp.inf, score))
        return p, state, chosen.at[i].set(j), taken.at[j].set(True)

    carry = (params, opt.init(params), chosen, taken)
    return jax.lax.fori_loop(1, budget, add_one, carry)[2]


def rnd_target(
    in_shape: int | Sequence[int], *, key: PRNGKeyArray | None = None, seed: int | None = None, **options: Any
) -> _Flat:
    """The fixed random *target* network of ``select(..., "rnd", key=key, **options)`` (or
    ``seed``) for samples of ``in_shape`` (an int: flat samples of that many features). Built
    from the RND method's architecture options: ``architecture="mlp"`` (``width``,
    ``depth``, ``activation``) or ``"cnn"`` (the authors' trunk: 3×3 convs of ``channels``
    with 2×2 average pooling, flattened, then the readout); ``out_size`` outputs. Its training
    options are accepted and unused. The data paper measures the selected sets' eNTK on it,
    as the authors did. It applies to one sample of any shape of ``in_shape``'s size.

    >>> import numpy as np
    >>> pool = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    >>> rnd_target(8, seed=3)(pool[0]).shape
    (16,)
    >>> rnd_target((8, 8), seed=3, architecture="cnn", channels=(4, 8))(np.ones(64)).shape
    (16,)
    """
    if key is not None and seed is not None:
        raise ValueError("pass either key or seed, not both")
    if key is None:
        key = jax.random.key(check_int(0 if seed is None else seed, "seed", 0))
    opts = check_options("method 'rnd'", options, _METHODS["rnd"].defaults)
    k_target = jax.random.split(key, 3)[1]  # the split _rnd makes: (first point, target, predictor)
    return _Flat(_rnd_network(in_shape, opts, k_target))


def _rnd_network(in_shape: int | Sequence[int], opts: dict[str, Any], key: PRNGKeyArray) -> MLP | CNN:
    """An RND target or predictor network (see :func:`rnd_target`)."""
    shape = (in_shape,) if isinstance(in_shape, int | np.integer) else tuple(in_shape)
    arch = opts["architecture"]
    if arch == "mlp":
        in_size = check_int(int(np.prod(shape)), "in_shape", 1)
        return MLP(in_size, opts["out_size"], opts["width"], opts["depth"], opts["activation"], key=key)
    if arch == "cnn":
        return CNN(
            shape,
            opts["out_size"],
            0,
            0,
            opts["activation"],
            channels=opts["channels"],
            pool="flatten",
            downsample=True,
            key=key,
        )
    raise ValueError(f"option architecture must be 'mlp' or 'cnn', got {arch!r}")


class _Flat(eqx.Module):
    """A network of flattened samples applied to one sample of any shape (as select sees the pool)."""

    net: MLP | CNN

    def __call__(self, x: Any) -> Any:
        return self.net(jnp.reshape(x, (-1,)))


def _rnd(pool: _Pool, budget: int, key: PRNGKeyArray, opts: dict[str, Any]) -> np.ndarray:
    steps = check_int(opts["steps"], "steps", 0)
    lr = check_float(opts["lr"], "lr", 0.0)
    batch = min(check_int(opts["batch_size"], "batch_size", 1), budget)
    n = len(pool.x)
    k_first, _, k_pred = jax.random.split(key, 3)
    target = rnd_target(pool.raw.shape[1:], key=key, **opts).net
    predictor = _rnd_network(pool.raw.shape[1:], opts, k_pred)
    xj = jnp.asarray(pool.x)
    target_out = jax.vmap(target)(xj)
    first = jax.random.randint(k_first, (), 0, n)
    idx = _rnd_select(xj, first, predictor, target_out, budget, steps, lr, batch, jax.random.fold_in(key, 7))
    return np.asarray(idx, np.int64)


# --------------------------------------------------------------------------- max_entropy


def _max_entropy(pool: _Pool, budget: int, key: PRNGKeyArray, opts: dict[str, Any]) -> np.ndarray:
    m = check_int(opts["m"], "m", 1)
    n, d = pool.x.shape
    k_model, k_sets = jax.random.split(key)
    model = opts["model"]
    if model is None:
        model = MLP(d, 10, 64, 2, key=k_model)
        samples = pool.x
    else:  # the user's model takes samples of the pool's own shape
        samples = pool.raw.astype(np.float32)
    best, best_s = None, -np.inf
    for k in jax.random.split(k_sets, m):
        idx = np.sort(np.asarray(jax.random.choice(k, n, (budget,), replace=False)))
        s = float(entropy(spectrum(entk(model, jnp.asarray(samples[idx])))))
        if s > best_s:
            best, best_s = idx, s
    return np.asarray(best, np.int64)


# --------------------------------------------------------------------------- select

_METHODS: dict[str, _Method] = {
    "random": _Method(_random, {}),
    "rnd": _Method(
        _rnd,
        {
            "architecture": "mlp",
            "width": 64,
            "depth": 2,
            "channels": (32, 64),
            "out_size": 16,
            "activation": "relu",
            "steps": 50,
            "lr": 1e-3,
            "batch_size": 128,
        },
    ),
    "max_entropy": _Method(_max_entropy, {"m": 20, "model": None}),
}


#: method name -> its options and their defaults (``select(..., method, **options)``)
METHODS: dict[str, dict[str, Any]] = {name: dict(m.defaults) for name, m in _METHODS.items()}


def select(
    pool: Any,
    budget: int,
    method: str = "rnd",
    *,
    key: PRNGKeyArray | None = None,
    seed: int | None = None,
    **options: Any,
) -> np.ndarray:
    """Choose ``budget`` distinct training points from ``pool`` (papers/data.md).

    Parameters
    ----------
    pool:
        Candidate inputs, ``(N, ...)`` (flattened per sample for the RND networks).
    budget:
        Number of points to choose, ``1 <= budget <= N``.
    method:
        - ``"random"``: uniform without replacement.
        - ``"rnd"``: random network distillation. A fixed random *target* MLP f_T and a
          trainable *predictor* MLP f_P of the same architecture. Start from one random
          point; repeat: score every pool point by d(x) = mean_k (f_T(x)_k − f_P(x)_k)²
          with the current predictor, add the highest-scoring point not yet chosen,
          retrain f_P (``steps`` Adam steps of MSE on the chosen points, continuing from
          its current weights and optimizer state; once more than ``batch_size`` points
          are chosen, each step uses ``batch_size`` of them drawn uniformly, so a large
          budget costs O(budget · batch_size) per step instead of O(budget²)). Options:
          ``architecture="mlp", width=64, depth=2, out_size=16, activation="relu",
          steps=50, lr=1e-3, batch_size=128``; ``architecture="cnn"`` makes both networks
          the authors' CNN trunk (3×3 convs of ``channels=(32, 64)``, each followed by 2×2
          average pooling, flattened, then ``out_size`` outputs: ``out_size=256`` is their
          Conv32-Conv64-Dense256) on samples of the pool's shape. The whole loop is one
          compiled function.
        - ``"max_entropy"``: draw ``m`` random subsets of size ``budget`` and keep the one
          whose traced eNTK (``nb.entk``) has the largest von Neumann entropy. Options:
          ``m=20``, ``model=None`` (an Equinox model called on one pool sample; default
          ``MLP(D, 10, width=64, depth=2)`` from the key).
    key, seed:
        A JAX PRNG key or an int seed (at most one; default ``seed=0``).

    Returns
    -------
    numpy.ndarray
        ``(budget,)`` int64 indices into ``pool``, distinct, in selection order
        (``"max_entropy"``: the chosen subset, sorted).

    Example
    -------
    >>> import numpy as np
    >>> pool = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    >>> idx = select(pool, 10, "rnd", seed=0, steps=20)
    >>> idx.shape, len(set(idx.tolist()))
    ((10,), 10)
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {tuple(_METHODS)}, got {method!r}")
    if key is not None and seed is not None:
        raise ValueError("pass either key or seed, not both")
    if key is None:
        key = jax.random.key(check_int(0 if seed is None else seed, "seed", 0))
    raw = np.asarray(pool)
    if raw.ndim < 2 or len(raw) == 0:
        raise ValueError(f"pool must have shape (N, ...) with N >= 1, got {raw.shape}")
    if not np.issubdtype(raw.dtype, np.number):
        raise TypeError(f"pool must be numeric, got dtype {raw.dtype}")
    x = raw.reshape(len(raw), -1).astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("pool contains NaN or Inf")
    budget = check_int(budget, "budget", 1)
    if budget > len(x):
        raise ValueError(f"budget={budget} exceeds the pool size {len(x)}")
    run, defaults = _METHODS[method]
    opts = check_options(f"method {method!r}", options, defaults)
    return run(_Pool(x, raw), budget, key, opts)
