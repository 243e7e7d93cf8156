"""Worker run in ntkbench's own env (.venv, current JAX); counterpart of ``_nt_worker.py``.

Times one method on the .npz written by ``vs_neural_tangents.py`` and prints one JSON line:

- ``entk``: ``ntkbench.entk(model, x, outputs=..., method="auto")`` — the public call, as
  a user makes it. ``--form eqx`` (default): the Equinox twin of the model from
  ``_eqx_models.py`` (same function, same parameters); ``--form apply``:
  ``(apply_one, params)`` around the shared plain apply_fn; ``--form flax`` (MLP only):
  the same MLP written as a Flax NNX module (``nnx.Linear`` layers holding the same
  parameters), given to ``entk`` as it is; ``--form linen`` (MLP only): the same MLP as a
  Flax linen module of ``nn.Dense`` layers, given as ``(module, variables)``.
- ``naive``: vmap(jacrev) + einsum in this env's JAX (same code as the NT env's naive).

    .venv/bin/python benchmarks/_ours_worker.py --data D.npz --model mlp --n 32 \
        --outputs trace --method entk [--save K.npy]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--outputs", choices=("trace", "full"), required=True)
    ap.add_argument("--method", choices=("entk", "naive"), required=True)
    ap.add_argument("--entk-method", default="auto")
    ap.add_argument(
        "--form",
        choices=("eqx", "apply", "flax", "linen"),
        default="eqx",
        help="eqx: the Equinox twin of the model (_eqx_models); apply: (apply_fn, params); flax: a Flax NNX MLP; "
        "linen: a Flax linen MLP with its variables",
    )
    ap.add_argument("--save")
    ap.add_argument("--min-total", type=float, default=0.3)
    args = ap.parse_args()

    import jax
    import numpy as np

    import _bench_models as bm

    data = np.load(args.data)
    x = data["x"][: args.n]
    params = {k[2:]: data[k] for k in data.files if k.startswith("p_")}
    x, params = jax.device_put(x), jax.device_put(params)
    apply = bm.apply_fn(args.model)
    if args.method == "entk":
        import ntkbench as nb

        if args.form == "eqx":
            import _eqx_models

            model = _eqx_models.build(args.model, {k: np.asarray(v) for k, v in params.items()})

            def fn(x, p):
                return nb.entk(model, x, outputs=args.outputs, method=args.entk_method)
        elif args.form == "flax":
            module = _flax_mlp({k: np.asarray(v) for k, v in params.items()}, args.model)

            def fn(x, p):
                return nb.entk(module, x, outputs=args.outputs, method=args.entk_method)
        elif args.form == "linen":
            linen_model = _linen_mlp({k: np.asarray(v) for k, v in params.items()}, args.model)

            def fn(x, p):
                return nb.entk(linen_model, x, outputs=args.outputs, method=args.entk_method)
        else:

            def apply_one(p, xi):
                return apply(p, xi[None])[0]

            def fn(x, p):
                return nb.entk((apply_one, p), x, outputs=args.outputs, method=args.entk_method)
    else:
        fn = jax.jit(lambda x, p: bm.naive_kernel(apply, p, x, args.outputs))
    rss0, _ = bm.rss_bytes()
    best, first, reps, k = bm.time_call(fn, x, params, min_total=args.min_total)
    _, peak = bm.rss_bytes()
    k = np.asarray(k)
    if args.save:
        np.save(args.save, k)
    print(
        json.dumps(
            {
                "side": "ours",
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
                "form": args.form if args.method == "entk" else "apply",
            }
        )
    )


def _flax_mlp(params: dict, model: str):
    """The benchmark MLP (``_bench_models.apply_fn("mlp")``) as a Flax NNX module holding
    ``params``: relu(x W0 + b0) → relu(· W1 + b1) → · W2 + b2."""
    if model != "mlp":
        raise SystemExit(f"--form flax: only the mlp is written in Flax, got {model!r}")
    import jax
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List(
                [nnx.Linear(params[f"w{i}"].shape[0], params[f"w{i}"].shape[1], rngs=rngs) for i in range(3)]
            )
            for i, layer in enumerate(self.layers):
                layer.kernel[...] = params[f"w{i}"]
                layer.bias[...] = params[f"b{i}"]

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = jax.nn.relu(layer(x))
            return self.layers[-1](x)

    return MLP(nnx.Rngs(0))


def _linen_mlp(params: dict, model: str):
    """The benchmark MLP as ``(linen module, variables)``: three ``nn.Dense`` layers holding
    ``params``."""
    if model != "mlp":
        raise SystemExit(f"--form linen: only the mlp is written in Flax, got {model!r}")
    import jax
    from flax import linen

    class MLP(linen.Module):
        @linen.compact
        def __call__(self, x):
            for i in range(2):
                x = jax.nn.relu(linen.Dense(params[f"w{i}"].shape[1])(x))
            return linen.Dense(params["w2"].shape[1])(x)

    layers = {f"Dense_{i}": {"kernel": params[f"w{i}"], "bias": params[f"b{i}"]} for i in range(3)}
    variables = jax.device_put({"params": layers})  # JAX arrays, as module.init gives
    return MLP(), variables


if __name__ == "__main__":
    main()
