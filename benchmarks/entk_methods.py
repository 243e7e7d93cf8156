"""Time and peak memory of each ntkbench.entk method against the naive baseline.

MLP 64-512-512-10 (ReLU, standard init), N = 128, float32, traced outputs by default.
Each method runs in its own subprocess (so peak resident memory is its own); the rounds
alternate between methods so machine noise hits all sides alike. Prints a table with the
speed-up of every method over the naive ``vmap(jacrev)`` + einsum kernel measured in the
same run.

    python benchmarks/entk_methods.py [--n 128] [--outputs trace|full] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

WORKER = r"""
import json, resource, sys, time
import jax, jax.numpy as jnp, equinox as eqx
import ntkbench as nb

method, n, outputs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
model = eqx.nn.MLP(64, 10, 512, 2, key=jax.random.key(0))
x = jax.random.normal(jax.random.key(1), (n, 64))

def naive(model, x):
    params, static = eqx.partition(model, eqx.is_inexact_array)
    f = lambda p, xi: eqx.combine(p, static)(xi)
    jac = jax.vmap(jax.jacrev(f), in_axes=(None, 0))(params, x)
    leaves = jax.tree_util.tree_leaves(jac)
    if outputs == "trace":
        return sum(jnp.einsum("ik...,jk...->ij", j, j) for j in leaves)
    return sum(jnp.einsum("ik...,jl...->ijkl", j, j) for j in leaves)

if method == "naive":
    fn = eqx.filter_jit(naive)
    call = lambda: fn(model, x)
else:
    call = lambda: nb.entk(model, x, outputs=outputs, method=method)

base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter(); K = call(); K.block_until_ready(); first = time.perf_counter() - t0
times, total = [], 0.0
while total < 0.3 or len(times) < 3:
    t = time.perf_counter(); call().block_until_ready(); d = time.perf_counter() - t
    times.append(d); total += d
    if len(times) >= 50: break
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"method": method, "best_s": min(times), "first_s": first,
                  "peak_rss_delta_mib": (peak - base) / 1024, "peak_rss_mib": peak / 1024,
                  "K": [float(v) for v in jnp.ravel(K)[::37]]}))
"""


def run(method: str, n: int, outputs: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", WORKER, method, str(n), outputs],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker for {method!r} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--outputs", choices=["trace", "full"], default="trace")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)

    import jax

    methods = ["naive", "jacobian", "ntvp", "structured", "auto"]
    best: dict[str, dict] = {}
    for r in range(args.rounds):
        order = methods if r % 2 == 0 else methods[::-1]
        for m in order:
            res = run(m, args.n, args.outputs)
            if m not in best or res["best_s"] < best[m]["best_s"]:
                best[m] = res
    naive = best["naive"]["best_s"]
    print(f"# entk methods: MLP 64-512-512-10, N={args.n}, outputs={args.outputs}, float32")
    print(
        f"# {platform.node()} {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, best of {args.rounds} alternating rounds"
    )
    print(f"{'method':<12}{'time (ms)':>12}{'first call (s)':>16}{'peak RSS +MiB':>15}{'speed-up vs naive':>19}")
    for m in methods:
        b = best[m]
        print(
            f"{m:<12}{1e3 * b['best_s']:>12.2f}{b['first_s']:>16.2f}{b['peak_rss_delta_mib']:>15.0f}"
            f"{naive / b['best_s']:>18.{0 if naive / b['best_s'] >= 10 else 2}f}x"
        )
    import numpy as np

    ref = np.asarray(best["naive"]["K"])
    worst = max(np.max(np.abs(np.asarray(b["K"]) - ref)) / np.max(np.abs(ref)) for m, b in best.items() if m != "naive")
    print(f"# max |K - K_naive| / max |K_naive| over every 37th entry, all methods: {worst:.1e}")


if __name__ == "__main__":
    main()
