"""Kernel-free spectra at large N: time and peak memory of top_eigenvalues and entropy_estimate.

Question: how long do ``ntkbench.linalg.top_eigenvalues`` (k = 64, Lanczos) and
``entropy_estimate`` (SLQ, deflated with those 64 eigenpairs) take for an MLP with ~1 M
parameters (64 → 1000 → 1000 → C, ReLU, float32) at N = 10³, 10⁴ (10⁵ with ``--n``), how
much memory do they need, and how accurate are they against the dense eNTK where it fits?

Each N runs in its own subprocess so that peak RSS belongs to that N alone. The dense
reference (``ntkbench.entk`` + ``numpy.linalg.eigh`` in float64) is computed in a separate
subprocess when N ≤ ``--dense-max`` and its top-k relative error / entropy error reported.
Also reported: the measured time of one kernel-vector product and a matmul rate (GFLOP/s)
in the same process, for extrapolation.

    .venv/bin/python benchmarks/kernel_free_scaling.py                    # N = 1000 4096
    .venv/bin/python benchmarks/kernel_free_scaling.py --n 1000 10000
    .venv/bin/python benchmarks/kernel_free_scaling.py --n 100000 --dense-max 0   # long
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
WORK = os.path.join(HERE, "_work")


def _model_and_data(n: int, width: int, n_out: int, seed: int = 0):
    import equinox as eqx
    import jax

    model = eqx.nn.MLP(64, n_out, width, 2, key=jax.random.key(seed))
    x = jax.random.normal(jax.random.key(seed + 1), (n, 64))
    return model, x


def _matmul_gflops() -> float:
    import jax
    import jax.numpy as jnp

    a = jnp.ones((2048, 2048), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048**3 / best / 1e9


def run_kernel_free(args) -> dict:
    import equinox as eqx
    import jax
    import numpy as np

    import _bench_models as bm
    from ntkbench import linalg

    model, x = _model_and_data(args.one, args.width, args.n_out)
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(model) if hasattr(a, "size"))
    rss0, _ = bm.rss_bytes()
    out = {
        "n": args.one,
        "params": int(n_params),
        "n_out": args.n_out,
        "outputs": args.outputs,
        "matmul_gflops": _matmul_gflops(),
        "jax": jax.__version__,
    }

    kw = {"matvec": args.matvec}
    out["matvec"] = args.matvec
    t0 = time.perf_counter()
    op = linalg._operator(model, x, args.outputs, args.block_size, args.matvec, linalg._MEMORY_LIMIT)
    jax.block_until_ready(op)
    out["operator_s"] = time.perf_counter() - t0
    out["operator"] = type(op).__name__
    if isinstance(op, linalg._FeatureOperator):
        out["feature_bytes"] = int(sum(a.nbytes for a in op.feats))
    v0 = np.ones(x.shape[0] if args.outputs == "trace" else x.shape[0] * args.n_out, np.float32)
    dyn, static = eqx.partition(op, eqx.is_array)
    # .lower() traces the lambda here, before the `del static` below
    cost = jax.jit(lambda d, v: eqx.combine(d, static)(v)).lower(dyn, v0).compile().cost_analysis()  # noqa: F821
    cost = cost[0] if isinstance(cost, list) else cost
    out["matvec_flops"] = float(cost.get("flops", float("nan")))
    del op, dyn, static, cost  # drop every reference to its cached features
    mv = linalg.kernel_matvec(model, x, outputs=args.outputs, block_size=args.block_size, **kw)
    v = np.ones(x.shape[0] if args.outputs == "trace" else (x.shape[0], args.n_out), np.float32)
    t0 = time.perf_counter()
    jax.block_until_ready(mv(v))
    out["matvec_first_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(mv(v))
    out["matvec_s"] = time.perf_counter() - t0
    del mv  # free its cached features before top_eigenvalues builds its own
    if args.matvec_only:
        _, out["rss_peak"] = bm.rss_bytes()
        return out

    t0 = time.perf_counter()
    lam, vecs = linalg.top_eigenvalues(
        model,
        x,
        args.k,
        outputs=args.outputs,
        method="lanczos",
        vectors=True,
        block_size=args.block_size,
        tol=args.tol,
        depth=args.depth,
        **kw,
    )
    jax.block_until_ready(vecs)
    out["top_k_s"] = time.perf_counter() - t0
    out["top_k"] = np.asarray(lam, np.float64).tolist()
    _, out["rss_peak_after_top_k"] = bm.rss_bytes()

    t0 = time.perf_counter()
    s, err = linalg.entropy_estimate(
        model,
        x,
        num_probes=args.probes,
        lanczos_order=args.order,
        outputs=args.outputs,
        block_size=args.block_size,
        eigenpairs=(lam, vecs),
        key=jax.random.key(1),
        **kw,
    )
    out["entropy_s"] = time.perf_counter() - t0
    out["entropy"], out["entropy_stderr"] = float(s), float(err)
    _, peak = bm.rss_bytes()
    out.update(rss_before=rss0, rss_peak=peak, device_memory=bm.device_memory())
    return out


def run_dense(args) -> dict:
    import jax
    import numpy as np

    import _bench_models as bm
    import ntkbench as nb

    model, x = _model_and_data(args.one, args.width, args.n_out)
    t0 = time.perf_counter()
    k = nb.entk(model, x, outputs=args.outputs)
    k = np.asarray(jax.block_until_ready(k), np.float64)
    if args.outputs == "full":
        n, _, c, _ = k.shape
        k = k.transpose(0, 2, 1, 3).reshape(n * c, n * c)
    t_kernel = time.perf_counter() - t0
    t0 = time.perf_counter()
    eigs = np.linalg.eigvalsh(k)[::-1]
    t_eigh = time.perf_counter() - t0
    p = np.clip(eigs, 0, None)
    p = p[p > 0] / p.sum()
    _, peak = bm.rss_bytes()
    return {
        "n": args.one,
        "dense_kernel_s": t_kernel,
        "dense_eigh_s": t_eigh,
        "top_k": eigs[: args.k].tolist(),
        "entropy": float(-np.sum(p * np.log(p))),
        "rss_peak": peak,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", nargs="+", type=int, default=[1000, 4096])
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--n-out", type=int, default=1, help="model outputs C (traced cost grows ~C×)")
    ap.add_argument("--outputs", default="trace", choices=("trace", "full"))
    ap.add_argument("--probes", type=int, default=8)
    ap.add_argument("--order", type=int, default=30)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--depth", type=int, default=None, help="first Lanczos depth (default 2k + 20)")
    ap.add_argument("--block-size", type=int, default=None)
    ap.add_argument("--matvec", default="auto", choices=("auto", "features", "jvp"))
    ap.add_argument("--matvec-only", action="store_true", help="only time one K·v (no top-k, entropy)")
    ap.add_argument("--dense-max", type=int, default=4096)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", default=os.path.join(WORK, "kernel_free_scaling.json"))
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--dense", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one is not None:
        print(json.dumps(run_dense(args) if args.dense else run_kernel_free(args)))
        return

    os.makedirs(WORK, exist_ok=True)
    passthrough = [
        "--k",
        str(args.k),
        "--width",
        str(args.width),
        "--n-out",
        str(args.n_out),
        "--outputs",
        args.outputs,
        "--probes",
        str(args.probes),
        "--order",
        str(args.order),
        "--tol",
        str(args.tol),
        "--matvec",
        args.matvec,
    ]
    if args.matvec_only:
        passthrough.append("--matvec-only")
    if args.block_size:
        passthrough += ["--block-size", str(args.block_size)]
    if args.depth:
        passthrough += ["--depth", str(args.depth)]
    rows = []
    for n in args.n:
        row = {"n": n}
        for kind in ["kernel_free", "dense"] if n <= args.dense_max else ["kernel_free"]:
            cmd = [sys.executable, os.path.abspath(__file__), "--one", str(n), *passthrough]
            if kind == "dense":
                cmd.append("--dense")
            t0 = time.perf_counter()
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                row[kind] = (
                    json.loads(res.stdout.strip().splitlines()[-1])
                    if res.returncode == 0
                    else {"error": (res.stderr.strip().splitlines() or ["?"])[-1][:300]}
                )
            except subprocess.TimeoutExpired:
                row[kind] = {"error": f"timeout after {args.timeout:.0f} s"}
            row[kind]["wall_s"] = time.perf_counter() - t0
        if "top_k" in row.get("dense", {}) and "top_k" in row["kernel_free"]:
            import numpy as np

            a, b = np.array(row["kernel_free"]["top_k"]), np.array(row["dense"]["top_k"])
            row["top_k_max_rel_err"] = float(np.max(np.abs(a / b - 1)))
            row["entropy_err"] = row["kernel_free"]["entropy"] - row["dense"]["entropy"]
        rows.append(row)
        print(json.dumps(row)[:2000])
        sys.stdout.flush()
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
    }
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(json.dumps(meta))
    print()
    print(
        "| N | P | C | matvec | top-64 time | entropy time | peak RSS | dense kernel+eigh | top-k max rel err | S (kernel-free ± se) | S dense |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        kf, de = r["kernel_free"], r.get("dense", {})
        if "error" in kf:
            print(f"| {r['n']} | | | {kf['error']} |")
            continue
        if "top_k_s" not in kf:
            print(
                f"| {r['n']} | {kf['params']} | {kf['n_out']} | {kf['matvec_s']:.2f} s ({kf['matvec']}, "
                f"{kf['matvec_flops'] / 1e9:.1f} GFLOP) | – | – | {kf['rss_peak'] / 2**30:.2f} GiB | | | | |"
            )
            continue
        dense_t = f"{de['dense_kernel_s']:.1f} + {de['dense_eigh_s']:.1f} s" if "dense_kernel_s" in de else "–"
        print(
            f"| {r['n']} | {kf['params']} | {kf['n_out']} | {kf['matvec_s']:.2f} s | {kf['top_k_s']:.1f} s "
            f"| {kf['entropy_s']:.1f} s | {kf['rss_peak'] / 2**30:.2f} GiB | {dense_t} "
            f"| {r.get('top_k_max_rel_err', float('nan')):.1e} | {kf['entropy']:.4f} ± {kf['entropy_stderr']:.4f} "
            f"| {de.get('entropy', float('nan')):.4f} |"
        )


if __name__ == "__main__":
    main()
