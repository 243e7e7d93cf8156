"""How large can a speed-up over the naive eNTK be at all, per workload?

Question: the goal "≥ 100× over naive vmap(jacrev) + einsum" is met on the MLP; is it
reachable on the CNN and the transformer block of the neural-tangents comparison?

For each workload this measures, in one process (so one machine state): the float32
matmul rate (2048² @ 2048², best of repeats), the naive kernel's time, ``entk``'s time
(method="auto"), and the FLOPs of the cheapest method by ntkbench's cost model
(``ntkbench.kernel.costs``: per-layer Gram or Jacobian route, whichever is fewer FLOPs,
plus forming the features), halved for the kernel's symmetry. The *ceiling* is the naive
time over the time those FLOPs take at the matmul rate: the speed-up an implementation of
the cheapest known route would reach if every FLOP ran at the matmul rate and nothing
else cost anything. A goal above the ceiling cannot be met by any of these routes.

    .venv/bin/python benchmarks/naive_ceiling.py [--models mlp cnn transformer] [--n 32 128]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mlp", "cnn", "transformer"])
    ap.add_argument("--n", nargs="+", type=int, default=[32, 128])
    ap.add_argument("--outputs", nargs="+", default=["trace", "full"])
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    import _bench_models as bm
    import _eqx_models
    import ntkbench as nb
    from flop_rate import matmul_rate
    from ntkbench.kernel import costs

    rate = matmul_rate(2048)
    print(
        f"# {platform.node()} {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}; float32 matmul {rate / 1e9:.0f} GFLOP/s"
    )
    print(
        "| model | outputs | N | naive | ntkbench | naive / ours | cheapest route | GFLOP (sym.) "
        "| at matmul rate | ceiling naive / bound |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        p = bm.init_params(name)
        apply = bm.apply_fn(name)
        model = _eqx_models.build(name, p)
        params = {k: jnp.asarray(v) for k, v in p.items()}
        for outputs in args.outputs:
            for n in args.n:
                x = jnp.asarray(bm.make_inputs(name, n))
                naive = jax.jit(lambda x, p, apply=apply, outputs=outputs: bm.naive_kernel(apply, p, x, outputs))
                t_naive = bm.time_call(naive, x, params, max_seconds=30)[0]
                t_ours = bm.time_call(lambda x, model=model, outputs=outputs: nb.entk(model, x, outputs=outputs), x)[0]
                c = costs(model, x, outputs=outputs)
                route = min(c, key=lambda m: c[m].flops)
                flops = c[route].flops / 2  # symmetric kernel: the upper triangle
                t_bound = flops / rate
                print(
                    f"| {name} | {outputs} | {n} | {t_naive * 1e3:.1f} ms | {t_ours * 1e3:.1f} ms "
                    f"| {t_naive / t_ours:.1f}× | {route} | {flops / 1e9:.2f} | {t_bound * 1e3:.2f} ms "
                    f"| {t_naive / t_bound:.0f}× |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
