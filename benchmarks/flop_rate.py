"""Achieved FLOP rate of the structured eNTK as a fraction of this machine's matmul rate.

Both measured in the same process, alternating: the float32 matmul rate (2048² @ 2048²,
best of repeats) and the kernel of MLP 64-512-512-10 (traced and full) at several N as
``entk(model, x, outputs=...)`` computes it (the structured method with the tiles
``method="auto"`` plans), whose FLOP count comes from XLA's own cost analysis of the
compiled kernel function; and, for reference, the same kernel as one untiled product (a
symmetric triangle of tiles does about half its FLOPs, so its time is the number to
compare, its rate the number the goal is stated in).

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


def compiled_flops(fn, *args) -> float:
    cost = fn.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[128, 512, 1024])
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of (matmul rate, kernel)")
    args = ap.parse_args(argv)
    from ntkbench import kernel as kn
    from ntkbench.kernel import _tiling  # reads _IN_PLACE_ELEMENTS

    model = eqx.nn.MLP(64, 10, 512, 2, key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_array)
    print("# structured eNTK FLOP rate vs float32 matmul rate (same process, best of alternating rounds)")
    print(
        f"# {platform.node()} {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )
    print(
        f"{'N':>6} {'outputs':>8} {'tiles':>6} {'GFLOP (XLA)':>12} {'time (ms)':>10} {'GFLOP/s':>9}"
        f" {'matmul GFLOP/s':>15} {'of matmul':>10} {'one product: GFLOP':>19} {'ms':>9} {'of matmul':>10}"
    )
    for n in args.n:
        x = jax.random.normal(jax.random.key(1), (n, 64))
        for outputs in ("trace", "full"):
            # the plan entk(model, x, outputs=...) takes (method "auto" resolves to structured)
            method, block, feature_block = kn._choose(model, x, None, outputs, kn._DEFAULT_MEMORY_LIMIT, None)
            assert method == "structured", method

            def kernel(p, x, outputs=outputs, block=block, feature_block=feature_block):
                return kn._entk_jit(eqx.combine(p, static), x, None, outputs, "structured", block, feature_block)

            fn = jax.jit(kernel)
            # the same kernel as one product, untiled (what this script measured before
            # issue 18): its time, for reference, in the same rounds
            one = jax.jit(
                lambda p, x, outputs=outputs: kn._entk_jit(eqx.combine(p, static), x, None, outputs, "structured", None)
            )
            # XLA counts a loop's body once: count the in-place tiles (a fori_loop) on the
            # same tiles unrolled and concatenated, the same arithmetic
            saved, _tiling._IN_PLACE_ELEMENTS = _tiling._IN_PLACE_ELEMENTS, float("inf")
            try:
                flops = compiled_flops(jax.jit(kernel), params, x)
            finally:
                _tiling._IN_PLACE_ELEMENTS = saved
            one_flops = compiled_flops(one, params, x)
            peak, t, t_one = 0.0, float("inf"), float("inf")
            for _ in range(args.rounds):
                peak = max(peak, matmul_rate())
                t = min(t, best_time(lambda fn=fn, x=x: fn(params, x)))
                t_one = min(t_one, best_time(lambda one=one, x=x: one(params, x)))
            rate = flops / t
            print(
                f"{n:>6} {outputs:>8} {block or n:>6} {flops / 1e9:>12.3f} {1e3 * t:>10.2f} {rate / 1e9:>9.1f}"
                f" {peak / 1e9:>15.1f} {rate / peak:>9.0%} {one_flops / 1e9:>19.3f} {1e3 * t_one:>9.2f}"
                f" {one_flops / t_one / peak:>9.0%}"
            )


if __name__ == "__main__":
    main()
