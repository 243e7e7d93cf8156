"""Worker run INSIDE the neural-tangents env (benchmarks/.nt-env, jax 0.4.25).

Loads inputs + parameters from an .npz written by ``vs_neural_tangents.py``, builds the
plain-JAX apply_fn from ``_bench_models.py``, times one method and prints one JSON line:

- ``structured``: ``nt.empirical_ntk_fn(f, trace_axes=..., vmap_axes=0, implementation=3)``
  (NT's fastest, structured derivatives). NT's ``trace_axes`` AVERAGES over outputs, so the
  traced kernel saved here is multiplied by C to be the sum, like ntkbench's.
- ``naive``: vmap(jacrev) + einsum, in this env's JAX.

    .nt-env/bin/python _nt_worker.py --data D.npz --model mlp --n 32 --outputs trace \
        --method structured [--save K.npy]
    .nt-env/bin/python _nt_worker.py --selftest
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _stub_tf_bridge() -> None:
    """NT's __init__ imports its experimental TF bridge (tensorflow, tf2jax); stub it."""

    def _unavailable(*args, **kwargs):
        raise RuntimeError("the TF bridge of neural-tangents is stubbed out in this benchmark env")

    for name in ("neural_tangents.empirical_tf", "neural_tangents.experimental.empirical_tf"):
        pkg = types.ModuleType(name)
        pkg.__path__ = []  # a package, so the submodule import resolves
        mod = types.ModuleType(name + ".empirical")
        mod.empirical_ntk_fn_tf = _unavailable
        mod.get_apply_fn_and_params = _unavailable
        pkg.empirical = mod
        sys.modules[name] = pkg
        sys.modules[name + ".empirical"] = mod


def _import_nt():
    _stub_tf_bridge()
    import neural_tangents as nt

    return nt


def structured_fn(nt, apply, outputs: str):
    import jax

    trace_axes = (-1,) if outputs == "trace" else ()
    ntk = nt.empirical_ntk_fn(apply, trace_axes=trace_axes, vmap_axes=0, implementation=3)
    return jax.jit(lambda x, p: ntk(x, None, p))


def selftest() -> None:
    import jax
    import numpy as np

    import _bench_models as bm

    nt = _import_nt()
    params = {k: v for k, v in bm.init_params("mlp").items()}
    x = bm.make_inputs("mlp", 6)
    apply = bm.apply_fn("mlp")
    k_nt = np.asarray(structured_fn(nt, apply, "trace")(x, params)) * bm.N_OUT
    k_naive = np.asarray(jax.jit(lambda x, p: bm.naive_kernel(apply, p, x, "trace"))(x, params))
    err = float(np.max(np.abs(k_nt - k_naive)) / np.max(np.abs(k_naive)))
    print(json.dumps({"neural_tangents": nt.__version__, "jax": jax.__version__, "rel_diff_vs_naive": err}))
    if not err < 1e-4:
        raise SystemExit(f"selftest: NT structured vs naive relative difference {err:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--selftest", action="store_true")
    ap.add_argument("--data")
    ap.add_argument("--model")
    ap.add_argument("--n", type=int)
    ap.add_argument("--outputs", choices=("trace", "full"))
    ap.add_argument("--method", choices=("structured", "naive"))
    ap.add_argument("--save")
    ap.add_argument("--min-total", type=float, default=0.3)
    args = ap.parse_args()
    if args.selftest:
        selftest()
        return

    import jax
    import numpy as np

    import _bench_models as bm

    nt = _import_nt()
    data = np.load(args.data)
    x = data["x"][: args.n]
    params = {k[2:]: data[k] for k in data.files if k.startswith("p_")}
    x, params = jax.device_put(x), jax.device_put(params)
    apply = bm.apply_fn(args.model)
    if args.method == "structured":
        fn = structured_fn(nt, apply, args.outputs)
    else:
        fn = jax.jit(lambda x, p: bm.naive_kernel(apply, p, x, args.outputs))
    rss0, _ = bm.rss_bytes()
    best, first, reps, k = bm.time_call(fn, x, params, min_total=args.min_total)
    _, peak = bm.rss_bytes()
    k = np.asarray(k)
    if args.method == "structured" and args.outputs == "trace":
        k = k * bm.N_OUT  # NT averages over the traced axis
    if args.save:
        np.save(args.save, k)
    print(
        json.dumps(
            {
                "side": "nt",
                "method": args.method,
                "model": args.model,
                "n": args.n,
                "outputs": args.outputs,
                "seconds": best,
                "first_call_s": first,
                "repeats": reps,
                "rss_before": rss0,
                "rss_peak": peak,
                "device_memory": bm.device_memory(),
                "shape": list(k.shape),
                "jax": jax.__version__,
                "neural_tangents": nt.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
