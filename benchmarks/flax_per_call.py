"""What a Flax model costs per ``entk`` call beyond its kernel: the MLP of
``vs_neural_tangents.py`` (64-512-512-10, the same float32 parameters) as its Equinox twin
(a list of layers, as in §2: its static part is unhashable, so no plan is kept per object
and every call takes the general path), the same twin with a tuple of layers (the
per-object plan of ``_plan._PLANS``), a Flax NNX module and a linen module with its
variables, all through ``nb.entk(model, x)`` (``auto``), in ONE process, the forms
alternating in rounds; per form the best over rounds of the mean time of back-to-back
calls (``--calls`` at N ≤ 32, fewer at larger N: about the same time per round). At N = 1 the kernel itself is tiny, so the times are the per-call
costs (checks, adapter, dispatch); at N = 32 they are the §2b row's.

    .venv/bin/python benchmarks/flax_per_call.py [--n 1 32 128 512] [--rounds 7] [--calls 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", nargs="+", type=int, default=[1, 32, 128, 512])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()

    import equinox as eqx
    import jax
    import numpy as np

    import _bench_models as bm
    import _eqx_models
    import ntkbench as nb
    from _ours_worker import _flax_mlp, _linen_mlp

    params = {k: np.asarray(v) for k, v in bm.init_params("mlp").items()}
    twin = _eqx_models.build("mlp", params)

    class TupleMLP(eqx.Module):
        layers: tuple

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = jax.nn.relu(layer(x))
            return self.layers[-1](x)

    forms = {
        "Equinox twin (list)": twin,
        "Equinox twin (tuple)": TupleMLP(tuple(twin.layers)),
        "Flax NNX": _flax_mlp(params, "mlp"),
        "linen": _linen_mlp(params, "mlp"),
    }
    print("| N | " + " | ".join(forms) + " |")
    print("|---|" + "---|" * len(forms))
    for n in args.n:
        x = jax.device_put(bm.make_inputs("mlp", n))
        best = dict.fromkeys(forms, float("inf"))
        for model in forms.values():  # compile
            jax.block_until_ready(nb.entk(model, x))
        names = list(forms)
        calls = max(5, args.calls * 32 // max(n, 32))
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                model = forms[name]
                t0 = time.perf_counter()
                for _ in range(calls):
                    K = nb.entk(model, x)
                jax.block_until_ready(K)
                best[name] = min(best[name], (time.perf_counter() - t0) / calls)
        print(f"| {n} | " + " | ".join(f"{best[name] * 1e3:.3f} ms" for name in forms) + " |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
