"""Data selection speed: ``ntkbench.select`` against an obvious implementation, same inputs.

Workloads (issue: paper `data`): a budget of 80 from a pool of 1000 digits, and a budget of
1000 from a pool of 10 000 mnist1d samples. For each method the time of the first call
(compilation included) and of a second call with another seed; for RND also the obvious
route -- a Python loop that retrains the predictor with a jitted Adam step per iteration
and scores the pool with a jitted forward pass -- with the same networks and steps, and
the ratio obvious / ours measured in this run. Both RND routes pick the same points (the
check is printed).

    python benchmarks/select_speed.py            # both workloads
    python benchmarks/select_speed.py --quick    # the small one only
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import ntkbench as nb
from ntkbench.models import MLP
from ntkbench.selection import METHODS


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def obvious_rnd(
    pool: np.ndarray, budget: int, seed: int, *, width=64, depth=2, out_size=16, activation="relu", steps=50, lr=1e-3
) -> np.ndarray:
    """RND as one would first write it: the same networks, keys and updates as
    ``ntkbench.select(..., "rnd")``, a Python loop dispatching one jitted Adam step (on the
    chosen rows padded to the budget, so it compiles once) and one jitted scoring pass."""
    x = jnp.asarray(pool.reshape(len(pool), -1), jnp.float32)
    n, d = x.shape
    k_first, k_target, k_pred = jax.random.split(jax.random.key(seed), 3)
    target = MLP(d, out_size, width, depth, activation, key=k_target)
    predictor = MLP(d, out_size, width, depth, activation, key=k_pred)
    target_out = jax.vmap(target)(x)
    params, static = eqx.partition(predictor, eqx.is_inexact_array)
    opt = optax.adam(lr)
    state = opt.init(params)

    @jax.jit
    def step(p, s, xs, ts, w):
        def loss(p):
            per = jnp.mean((jax.vmap(eqx.combine(p, static))(xs) - ts) ** 2, axis=-1)
            return jnp.sum(w * per) / jnp.sum(w)

        g = jax.grad(loss)(p)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s

    @jax.jit
    def score(p):
        return jnp.mean((jax.vmap(eqx.combine(p, static))(x) - target_out) ** 2, axis=-1)

    # the chosen rows padded to the budget (one compiled step, not one per set size)
    chosen = np.zeros(budget, np.int64)
    chosen[0] = int(jax.random.randint(k_first, (), 0, n))
    taken = np.zeros(n, bool)
    taken[chosen[0]] = True
    for i in range(1, budget):
        if i > 1:
            xs, ts = x[chosen], target_out[chosen]
            w = jnp.asarray(np.arange(budget) < i, jnp.float32)
            for _ in range(steps):
                params, state = step(params, state, xs, ts, w)
        s = np.array(score(params))
        s[taken] = -np.inf
        j = int(np.argmax(s))
        chosen[i] = j
        taken[j] = True
    return np.asarray(chosen)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the digits workload")
    ap.add_argument(
        "--skip-obvious-above",
        type=int,
        default=200,
        help="skip the obvious RND above this budget (it takes minutes at 1000)",
    )
    args = ap.parse_args(argv)
    workloads = [("digits", 1000, 80)] + ([] if args.quick else [("mnist1d", 10_000, 1000)])
    print(
        f"## ntkbench.select speed, {time.strftime('%Y-%m-%d %H:%M')}, jax {jax.__version__}, {jax.devices()[0].platform}"
    )
    print(
        "| pool | budget | method | first call (s) | second call (s) | obvious route (s) | obvious / ours | same picks |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, pool_size, budget in workloads:
        data = nb.load(name, pool_size, 0, seed=0)
        pool = data.x_train
        for method in METHODS:
            _, first = _timed(lambda m=method, p=pool, b=budget: nb.select(p, b, m, seed=0))
            ours, second = _timed(lambda m=method, p=pool, b=budget: nb.select(p, b, m, seed=1))
            row = f"| {name} {pool_size} | {budget} | {method} | {first:.2f} | {second:.2f} |"
            if method == "rnd" and budget <= args.skip_obvious_above:
                obvious, t_obv = _timed(lambda p=pool, b=budget: obvious_rnd(p, b, 1))
                same = np.mean(np.asarray(obvious) == np.asarray(ours))
                row += f" {t_obv:.2f} | {t_obv / second:.1f}x | {same:.0%} |"
            else:
                row += " – | – | – |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
