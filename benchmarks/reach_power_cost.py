"""Cost of one record of ``reach``'s ``power`` config, in training steps, at its largest size.

Workload (issue 29): the power config's largest model, an ``ntkbench.Decoder`` of width 104
(3 layers, 13 heads of 8; 392 600 non-embedding parameters) on the ``shakespeare`` characters
(V = 96), a batch of B = 32 windows of T = 32, Adam, softmax cross-entropy, float32. Timed
side by side in one process, alternating, median of ``--repeats`` after one compile call each:

- ``train step``: one Adam step on a mini-batch (value-and-grad + optax update), jitted;
- ``record``: the power config's record, compiled as ``train()`` compiles it
  (``ntkbench.train._loop._record_values``): χ_loss, χ_net (Hutchinson, 4 probes, with its
  standard error), χ_pos and ‖∇L‖² of the batch the next step trains on
  (``lnp_batch="train"``), and the test loss on 512 held-out windows; no kernel is formed;
- ``record, no test loss``: the LNP terms alone.

Prints the times and their ratios to a training step (measured in this run).

    python benchmarks/reach_power_cost.py             # width 104
    python benchmarks/reach_power_cost.py --quick     # width 32: seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="width 32")
    ap.add_argument("--width", type=int, default=104)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    if args.quick:
        args.width = 32

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    import ntkbench as nb
    from ntkbench.papers import reach
    from ntkbench.train import MEASURES, make_loss
    from ntkbench.train._loop import _record_values

    cfg = reach.configs("power")["shakespeare"]
    d = cfg["data"]
    data = nb.load(d["name"], 4096, d["n_test"], seed=0, context=d["context"])
    model = nb.make_model(
        {**cfg["model"], "width": args.width}, key=jax.random.key(0), in_shape=data.in_shape, out_size=96
    )
    loss = make_loss("ce", "next_token")
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    batch = cfg["train"]["batch_size"]
    key = jax.random.key(1)
    opt = optax.adam(cfg["train"]["lr"])
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, i):
        idx = jax.random.choice(jax.random.fold_in(key, i), x.shape[0], (batch,), replace=False)

        def batch_loss(p):
            m = eqx.combine(p, static)
            return jnp.mean(jax.vmap(loss)(jax.vmap(m)(x[idx]), y[idx]))

        grads = jax.grad(batch_loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    inputs = {
        "x_train": x,
        "y_train": y,
        "x_test": jnp.asarray(data.x_test),
        "y_test": jnp.asarray(data.y_test),
        "batch_key": key,
        "lnp_key": jax.random.key(2),
        "step": jnp.asarray(3, jnp.int32),
    }
    lnp_names = [n for n in cfg["record"]["measures"] if n != "test_loss"]

    def record_fn(names):
        measures = tuple(MEASURES[n]() for n in names)

        @jax.jit
        def record(params, inputs):
            m = eqx.combine(params, static)
            return _record_values(
                m, inputs, measures, loss, cfg["record"]["lnp_probes"], lnp_batch="train", batch_size=batch
            )

        return lambda: record(params, inputs)

    calls = {
        "train step": lambda: step(params, opt_state, jnp.asarray(3)),
        "record": record_fn(cfg["record"]["measures"]),
        "record, no test loss": record_fn(lnp_names),
    }
    for call in calls.values():  # compile
        jax.block_until_ready(call())
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            t = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    non_emb = nb.non_embedding_params(model)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}")
    print(
        f"# Decoder width {args.width} ({model.depth} layers; {non_emb} non-embedding, {nb.count_params(model)} "
        f"parameters), batch {batch} × {d['context']} characters, test {d['n_test']} windows; median of {args.repeats}"
    )
    print(f"{'':22s} {'ms':>9s} {'/ train step':>13s}")
    for name, t in med.items():
        print(f"{name:22s} {1e3 * t:9.2f} {t / med['train step']:13.1f}")
    every = cfg["record"]["every"]
    print(f"# a record every {every} steps adds {100 * med['record'] / med['train step'] / every:.0f} % to training")


if __name__ == "__main__":
    main()
