"""Speed-up of ntkbench.entk's methods over the naive baseline on a CNN and a transformer.

Question: what do the layer-wise ("structured") rules for convolutions, per-token linears
inside ``jax.vmap`` and embeddings buy over naive ``vmap(jacrev)`` + einsum, and does
``method="auto"`` pick the fastest method?

Workloads (float32, 10 outputs; from ``_bench_models`` / ``_eqx_models``, the same as the
neural-tangents comparison): ``cnn`` = 16×16×3, conv3×3(32), conv3×3(64, stride 2),
mean-pool, dense 10; ``transformer`` = 16 tokens × 64, one pre-LN block (4 heads, MLP
64-256-64, every linear applied per token with ``jax.vmap``), mean-pool, dense 10;
``tiny`` = ``ntkbench.models.TinyTransformer`` (vocab 32, 16 tokens, width 32, 2 blocks,
4 heads) with its logits mean-pooled over tokens to 32 outputs (embeddings tapped).

Each (workload, N, method) runs in its own subprocess; rounds alternate the order of the
methods so machine noise hits all sides alike; the table shows the best time of each and
its ratio to the naive time measured in the same run.

    .venv/bin/python benchmarks/entk_architectures.py [--models cnn transformer tiny]
        [--n 32 128] [--outputs trace] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

WORKER = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[5])
import numpy as np, jax, jax.numpy as jnp, equinox as eqx
import ntkbench as nb

name, method, n, outputs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if name == "tiny":
    class Pooled(eqx.Module):
        tf: nb.TinyTransformer
        def __call__(self, tokens):
            return jnp.mean(self.tf(tokens), axis=0)
    model = Pooled(nb.TinyTransformer(32, 16, width=32, layers=2, heads=4, key=jax.random.key(0)))
    x = jax.random.randint(jax.random.key(1), (n, 16), 0, 32)
else:
    import _bench_models as bm, _eqx_models
    model = _eqx_models.build(name, bm.init_params(name))
    x = jnp.asarray(bm.make_inputs(name, n))

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
    if len(times) >= 30: break
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
chosen = ""
if method == "auto":
    from ntkbench.kernel import _resolve_method, _DEFAULT_MEMORY_LIMIT, as_model
    chosen = "%s/%s/%s" % _resolve_method(as_model(model), x, None, "auto", _DEFAULT_MEMORY_LIMIT, outputs)
print(json.dumps({"method": method, "best_s": min(times), "first_s": first, "chosen": chosen,
                  "peak_rss_delta_mib": (peak - base) / 1024, "K": np.asarray(K, np.float64).ravel()[::97].tolist()}))
"""


def run(name: str, method: str, n: int, outputs: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", WORKER, name, method, str(n), outputs, HERE], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        return {"method": method, "error": out.stderr.strip().splitlines()[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["cnn", "transformer", "tiny"])
    ap.add_argument("--n", nargs="+", type=int, default=[32, 128])
    ap.add_argument("--outputs", choices=["trace", "full"], default="trace")
    ap.add_argument("--methods", nargs="+", default=["naive", "jacobian", "structured", "auto"])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)

    import jax
    import numpy as np

    print(
        f"# entk on architectures, outputs={args.outputs}, float32; {platform.node()} "
        f"{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, best of {args.rounds} alternating rounds"
    )
    print(
        f"{'model':<12}{'N':>5} {'method':<12}{'time (ms)':>11}{'first (s)':>11}{'RSS +MiB':>10}"
        f"{'vs naive':>10}{'rel.diff':>10}  auto chose"
    )
    for name in args.models:
        for n in args.n:
            best: dict[str, dict] = {}
            for r in range(args.rounds):
                order = args.methods if r % 2 == 0 else args.methods[::-1]
                for m in order:
                    res = run(name, m, n, args.outputs)
                    if "error" in res:
                        best.setdefault(m, res)
                    elif m not in best or "error" in best[m] or res["best_s"] < best[m]["best_s"]:
                        best[m] = res
            ref = best.get("naive", {})
            for m in args.methods:
                b = best[m]
                if "error" in b:
                    print(f"{name:<12}{n:>5} {m:<12} error: {b['error']}")
                    continue
                ratio = ref["best_s"] / b["best_s"] if "best_s" in ref else float("nan")
                diff = (
                    np.max(np.abs(np.subtract(b["K"], ref["K"]))) / np.max(np.abs(ref["K"]))
                    if "K" in ref
                    else float("nan")
                )
                print(
                    f"{name:<12}{n:>5} {m:<12}{1e3 * b['best_s']:>11.1f}{b['first_s']:>11.2f}"
                    f"{b['peak_rss_delta_mib']:>10.0f}{ratio:>9.2f}x{diff:>10.1e}  {b['chosen']}"
                )


if __name__ == "__main__":
    main()
