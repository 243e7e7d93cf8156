"""Tests for ntkbench.selection: random, RND and max-entropy selection (papers/data.md)."""

from __future__ import annotations

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkbench as nb
from ntkbench import data
from ntkbench.models import MLP
from ntkbench.selection import select


def test_public_api():
    assert nb.select is select


@pytest.fixture(scope="module")
def pool():
    ds = data.load("digits", 400, 0, seed=0)
    return ds.x_train, ds.y_train


def _valid(idx, n, budget):
    assert isinstance(idx, np.ndarray) and idx.shape == (budget,)
    assert np.issubdtype(idx.dtype, np.integer)
    assert len(set(idx.tolist())) == budget and idx.min() >= 0 and idx.max() < n


@pytest.mark.parametrize("method", ["random", "rnd"])
def test_select_valid_and_deterministic(pool, method):
    x, _ = pool
    opts = {"steps": 10} if method == "rnd" else {}
    idx = select(x, 15, method, seed=1, **opts)
    _valid(idx, len(x), 15)
    np.testing.assert_array_equal(idx, select(x, 15, method, seed=1, **opts))
    np.testing.assert_array_equal(idx, select(x, 15, method, key=jax.random.key(1), **opts))
    assert not np.array_equal(idx, select(x, 15, method, seed=2, **opts))
    _valid(select(x[:15], 15, method, seed=0, **opts), 15, 15)  # whole pool
    _valid(select(x, 1, method, seed=0, **opts), len(x), 1)


def _entk_entropy(model, x):
    """Effective entropy S / ln N of the traced eNTK, from full Jacobians (independent
    of ntkbench.kernel / measures)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    jac = jax.vmap(jax.jacrev(lambda p, xi: eqx.combine(p, static)(xi)), (None, 0))(params, x)
    j = jnp.concatenate([a.reshape(a.shape[0], a.shape[1], -1)
                         for a in jax.tree_util.tree_leaves(jac)], axis=-1)  # fmt: skip
    K = np.asarray(jnp.einsum("ikp,jkp->ij", j, j), np.float64)
    lam = np.clip(np.linalg.eigvalsh(K), 0.0, None)
    p = lam[lam > 0] / lam.sum()
    return float(-(p * np.log(p)).sum() / np.log(len(K)))


def test_rnd_selects_more_diverse_sets_than_random(pool):
    """papers/data.md: RND picks sets whose eNTK has larger entropy than random picks.
    Measured (budget 20, digits pools of 400 and 500, 5 seeds): RND 0.606-0.621 vs random
    0.553-0.569 -- every RND set above every random one."""
    x, _ = pool
    model = MLP(64, 10, 64, 2, key=jax.random.key(123))
    rnd, rand = [], []
    for s in range(3):
        rnd.append(_entk_entropy(model, x[select(x, 20, "rnd", seed=s)]))
        rand.append(_entk_entropy(model, x[select(x, 20, "random", seed=s)]))
    assert min(rnd) > max(rand)
    assert np.mean(rnd) > np.mean(rand) + 0.02


def test_rnd_budget_80_from_1000():
    """Validity at a larger budget. Covering all 10 classes is a sanity check only: random
    picks do it too (probability 0.998); the coverage claim is the next test."""
    ds = data.load("digits", 1000, 0, seed=0)
    idx = select(ds.x_train, 80, "rnd", seed=0)
    _valid(idx, 1000, 80)
    assert len(set(ds.y_train[idx].tolist())) == 10


def _coverage_distribution(counts, budget):
    """Exact P(a uniform draw of ``budget`` points without replacement from a pool with
    ``counts`` points per class covers exactly k classes), k = 0..C: inclusion-exclusion
    over class subsets (independent of ntkbench; checked against 20000 simulated draws)."""
    c, total = len(counts), math.comb(sum(counts), budget)
    only = np.zeros(c + 1)  # only[r] = sum over r-class subsets S of P(all draws from S)
    for r in range(c + 1):
        for subset in itertools.combinations(counts, r):
            only[r] += math.comb(sum(subset), budget) / total
    return np.array(
        [sum((-1) ** (k - j) * math.comb(c - j, k - j) * only[j] for j in range(k + 1)) for k in range(c + 1)]
    )


def test_rnd_covers_more_classes_than_random_picks():
    """papers/data.md: RND picks novel points, so a small RND set spans more classes than a
    random one. Budget 15 of 1000 digits, 16 seeds: random picks cover 7.95 classes on
    average (exact distribution below); RND 8.9 (measured: 142 classes over 16 seeds).
    The test is an exact one-sided test: the chance that 16 random selections cover as many
    classes in total must be below 1e-3, so a random selector passes it less than 1 time
    in 1000 (today's RND: 1.0e-4). Broken by hand: with ``_METHODS["rnd"]`` running
    ``_random`` it fails (see tests/README.md)."""
    ds = data.load("digits", 1000, 0, seed=0)
    p = _coverage_distribution(np.bincount(ds.y_train, minlength=10).tolist(), 15)
    assert abs(p.sum() - 1) < 1e-9 and abs(p @ np.arange(11) - 7.95) < 0.01
    covered = sum(len(set(ds.y_train[select(ds.x_train, 15, "rnd", seed=s)].tolist())) for s in range(16))
    total = np.array([1.0])
    for _ in range(16):
        total = np.convolve(total, p)  # distribution of the classes covered by 16 random sets
    p_random = total[covered:].sum()
    assert p_random < 1e-3, (covered, p_random)


def test_max_entropy_beats_typical_random_subset(pool):
    """For 3 seeds, the best of m = 64 random subsets must beat the 90th percentile of the
    same 32 other random subsets. A random selector passes at most C(7,3)/C(35,3) = 0.53 %
    of the time (3 draws all above the 28th of 32 others: the 3 must lie in the top 7 of
    35 exchangeable values); max_entropy fails by chance at most 3 * C(32,4)/C(96,4) =
    3.2 % (all 64 candidates below the 29th of 32 others, per seed). Once only one seed
    was used (a random selector passed about 1 time in 8), before that the median (half)."""
    x, _ = pool
    model = MLP(64, 10, 32, 1, key=jax.random.key(7))
    others = [_entk_entropy(model, x[select(x, 12, "random", seed=s)]) for s in range(50, 82)]
    threshold = np.quantile(others, 0.9)
    for seed in range(3):
        idx = select(x, 12, "max_entropy", seed=seed, m=64, model=model)
        _valid(idx, len(x), 12)
        np.testing.assert_array_equal(idx, np.sort(idx))
        best = _entk_entropy(model, x[idx])
        assert best > threshold, (seed, best, threshold, sorted(others)[-5:])
    # the default model path runs too
    _valid(select(x, 5, "max_entropy", seed=0, m=2), len(x), 5)


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        ((10, "rnd"), {}, ValueError, "budget=10 exceeds"),
        ((0, "rnd"), {}, ValueError, "budget"),
        ((3, "kmeans"), {}, ValueError, "method"),
        ((3, "rnd"), {"seed": 0, "key": jax.random.key(0)}, ValueError, "key or seed"),
        ((3, "rnd"), {"widht": 3}, ValueError, "widht"),
        ((3, "random"), {"steps": 3}, ValueError, "steps"),
        ((3.0, "random"), {}, TypeError, "budget"),
    ],
)
def test_select_errors(args, kwargs, exc, match):
    x = np.zeros((6, 4), np.float32)
    with pytest.raises(exc, match=match):
        select(x, *args, **kwargs)


def test_select_bad_pool():
    with pytest.raises(ValueError, match="pool"):
        select(np.zeros(5), 2, "random")
    with pytest.raises(ValueError, match="NaN"):
        select(np.full((5, 2), np.nan), 2, "random")


def _rnd_reference(pool, budget, seed, *, width=64, depth=2, out_size=16, steps=5, lr=1e-3):
    """The greedy RND rule written plainly (Python loop, full batch of the chosen points,
    optax Adam): start from the first random point, score by the predictor's squared error
    against the target, add the best unchosen point, retrain."""
    import optax

    x = jnp.asarray(pool, jnp.float32)
    k_first, k_target, k_pred = jax.random.split(jax.random.key(seed), 3)
    target = MLP(x.shape[1], out_size, width, depth, key=k_target)
    predictor = MLP(x.shape[1], out_size, width, depth, key=k_pred)
    t_out = jax.vmap(target)(x)
    params, static = eqx.partition(predictor, eqx.is_inexact_array)
    opt = optax.adam(lr)
    state = opt.init(params)

    def loss(p, xs, ts):
        return jnp.mean(jnp.mean((jax.vmap(eqx.combine(p, static))(xs) - ts) ** 2, axis=-1))

    chosen = [int(jax.random.randint(k_first, (), 0, len(x)))]
    for i in range(1, budget):
        if i > 1:
            for _ in range(steps):
                g = jax.grad(loss)(params, x[np.asarray(chosen)], t_out[np.asarray(chosen)])
                updates, state = opt.update(g, state, params)
                params = optax.apply_updates(params, updates)
        score = np.array(jnp.mean((jax.vmap(eqx.combine(params, static))(x) - t_out) ** 2, axis=-1))
        score[chosen] = -np.inf
        chosen.append(int(np.argmax(score)))
    return np.asarray(chosen)


def test_rnd_matches_a_plain_reference_and_minibatches_above_batch_size(pool):
    x, _ = pool
    ref = _rnd_reference(x[:150], 12, seed=4, steps=5)
    np.testing.assert_array_equal(select(x[:150], 12, "rnd", seed=4, steps=5), ref)
    # at most batch_size chosen points: the full batch, so the same picks as a larger batch
    np.testing.assert_array_equal(select(x[:150], 12, "rnd", seed=4, steps=5, batch_size=12), ref)
    # above it, mini-batches: still valid, deterministic, and more novel than random picks
    idx = select(x, 60, "rnd", seed=4, steps=5, batch_size=16)
    _valid(idx, len(x), 60)
    np.testing.assert_array_equal(idx, select(x, 60, "rnd", seed=4, steps=5, batch_size=16))
    with pytest.raises(ValueError, match="batch_size"):
        select(x, 5, "rnd", batch_size=0)
