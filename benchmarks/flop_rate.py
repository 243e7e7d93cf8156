"""Achieved FLOP rate of the structured eNTK as a fraction of this machine's matmul rate.

Both measured in the same process: the float32 matmul rate (n × n @ n × n, best of
repeats) and the structured kernel of MLP 64-512-512-10 (traced and full) at several N,
whose FLOP count comes from XLA's own cost analysis of the compiled kernel function.

    python benchmarks/flop_rate.py [--n 128 512 1024]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import equinox as eqx
import jax


def best_time(fn, min_total=0.5, max_calls=50):
    fn().block_until_ready()
    times, total = [], 0.0
    while (total < min_total or len(times) < 3) and len(times) < max_calls:
        t = time.perf_counter()
        fn().block_until_ready()
        d = time.perf_counter() - t
        times.append(d)
        total += d
    return min(times)


def matmul_rate(n=2048):
    a = jax.random.normal(jax.random.key(0), (n, n))
    b = jax.random.normal(jax.random.key(1), (n, n))
    f = jax.jit(lambda a, b: a @ b)
    return 2 * n**3 / best_time(lambda: f(a, b))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[128, 512, 1024])
    args = ap.parse_args(argv)
    from ntkbench.kernel import _entk_jit

    model = eqx.nn.MLP(64, 10, 512, 2, key=jax.random.key(0))
    peak = matmul_rate()
    print("# structured eNTK FLOP rate vs float32 matmul rate (same process)")
    print(
        f"# {platform.node()} {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}; matmul 2048² rate {peak / 1e9:.1f} GFLOP/s"
    )
    print(f"{'N':>6} {'outputs':>8} {'GFLOP (XLA)':>12} {'time (ms)':>10} {'GFLOP/s':>9} {'of matmul':>10}")
    for n in args.n:
        x = jax.random.normal(jax.random.key(1), (n, 64))
        for outputs in ("trace", "full"):
            params, static = eqx.partition(model, eqx.is_array)
            fn = jax.jit(
                lambda p, x, static=static, outputs=outputs: _entk_jit(
                    eqx.combine(p, static), x, None, outputs, "structured", None
                )
            )
            cost = fn.lower(params, x).compile().cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            flops = float(cost.get("flops", float("nan")))
            t = best_time(lambda fn=fn, params=params, x=x: fn(params, x))
            rate = flops / t
            print(f"{n:>6} {outputs:>8} {flops / 1e9:>12.3f} {1e3 * t:>10.2f} {rate / 1e9:>9.1f} {rate / peak:>9.0%}")


if __name__ == "__main__":
    main()
