"""Cost of one record under each kernel convention, as a ratio to one training step.

Workload: an MLP (depth 2, ``--width``) on the digits (64 inputs, C = 10 outputs), a probe
of ``--probe`` samples, SGD steps on mini-batches of ``--batch``, float32. Timed side by side
in one process, alternating, median of ``--repeats`` after one compile call each:

- ``train step``: one SGD step (value-and-grad + optax update), jitted;
- ``traced``: the record of eigenvalues, entropy and trace of the probe's traced N × N eNTK;
- ``full``: the same measures of the full (N·C) × (N·C) eNTK (``kernel="full"``);
- ``full, cosine``: the full kernel cosine-normalised before its spectrum;
- ``lnp probe``: χ_loss, χ_net, χ_pos, ‖∇L‖² on the probe (``lnp_batch="probe"``, exact χ_net);
- ``lnp train``: the same on the mini-batch the next step trains on (``lnp_batch="train"``).

Each record is compiled exactly as ``train()`` compiles it (``ntkbench.train._loop._record_values``
under ``jax.jit``). Prints the times and the ratios measured in this run.

    python benchmarks/convention_cost.py                  # width 256, probe 128, batch 64
    python benchmarks/convention_cost.py --quick          # width 64, probe 32: seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="width 64, probe 32, batch 32")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--probe", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    if args.quick:
        args.width, args.probe, args.batch = 64, 32, 32

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    import ntkbench as nb
    from ntkbench.conventions import Convention
    from ntkbench.train import MEASURES, make_loss
    from ntkbench.train._loop import _record_values

    data = nb.load("digits", 1024, 256, seed=0)
    model = nb.MLP(64, 10, width=args.width, depth=2, key=jax.random.key(0))
    loss = make_loss("mse", "classification")
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    key = jax.random.key(1)
    opt = optax.sgd(0.05)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, i):
        idx = jax.random.choice(jax.random.fold_in(key, i), x.shape[0], (args.batch,), replace=False)

        def batch_loss(p):
            m = eqx.combine(p, static)
            return jnp.mean(jax.vmap(loss)(jax.vmap(m)(x[idx]), y[idx]))

        grads = jax.grad(batch_loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    inputs = {
        "x_train": x,
        "y_train": y,
        "probe_x": x[: args.probe],
        "probe_y": y[: args.probe],
        "batch_key": key,
        "step": jnp.asarray(3, jnp.int32),
    }
    spectral = tuple(MEASURES[n]() for n in ("eigenvalues", "entropy", "trace"))
    lnp = tuple(MEASURES[n]() for n in ("chi_loss", "chi_net", "spectral_position", "grad_norm_sq"))
    records = {
        "traced": (spectral, Convention(), "probe"),
        "full": (spectral, Convention(kernel="full"), "probe"),
        "full, cosine": (spectral, Convention(kernel="full", normalize="cosine"), "probe"),
        "lnp probe": (lnp, Convention(), "probe"),
        "lnp train": (lnp, Convention(), "train"),
    }

    def record_fn(measures, convention, lnp_batch):
        @jax.jit
        def record(params, inputs):
            m = eqx.combine(params, static)
            return _record_values(m, inputs, measures, loss, None, convention, lnp_batch, args.batch)

        return record

    calls = {"train step": lambda: step(params, opt_state, jnp.asarray(3))}
    for name, (measures, convention, lnp_batch) in records.items():
        fn = record_fn(measures, convention, lnp_batch)
        calls[name] = lambda fn=fn: fn(params, inputs)
    for call in calls.values():  # compile
        jax.block_until_ready(call())
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            t = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}")
    print(
        f"# MLP 64-{args.width}-{args.width}-10 ({nb.count_params(model)} parameters), probe N = {args.probe} "
        f"(full kernel {args.probe * 10} rows), batch B = {args.batch}; median of {args.repeats}"
    )
    print(f"{'':14s} {'ms':>9s} {'/ train step':>13s}")
    for name, t in med.items():
        print(f"{name:14s} {1e3 * t:9.2f} {t / med['train step']:13.1f}")


if __name__ == "__main__":
    main()
