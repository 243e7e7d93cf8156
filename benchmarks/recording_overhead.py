"""Time per run and the cost of recording eNTK measures during training.

For every width of a sweep config (default ``examples/width_sweep.toml``, seed 0), trains
the same model on the same data and batches twice in one process, alternating:

- ``recorded``: with the config's ``Recorder`` (eNTK of the probe set every ``every``
  steps: eigenvalues, entropy, trace, effective rank, magnitude entropy, kernel distance
  from K_0, train/test loss and accuracy);
- ``bare``: ``recorder=None`` (only the final losses).

Each side runs once to compile, then ``--repeats`` times; the best time is kept. Prints
the time per run with and without recording and the overhead ratio measured in the same
run, plus the number of eNTK evaluations and the time per eNTK.

    python benchmarks/recording_overhead.py [--config examples/width_sweep.toml] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import tomllib


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="examples/width_sweep.toml")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--widths", type=int, nargs="*", help="default: the config's grid widths")
    args = ap.parse_args(argv)

    import importlib

    import jax

    sw = importlib.import_module("ntkbench.sweep")  # the module (ntkbench.sweep is also a function)
    from ntkbench.models import make_model
    from ntkbench.train import Recorder, train

    with open(args.config, "rb") as f:
        cfg = sw.validate_config(tomllib.load(f))
    widths = args.widths or cfg.get("grid", {}).get("width") or [cfg["model"]["width"]]
    tr = {**sw.TRAIN_DEFAULTS, **cfg.get("train", {})}
    rec = {**sw.RECORD_DEFAULTS, **cfg.get("record", {})}
    data = sw._load_for(cfg)
    opt = sw.make_optimizer(tr["optimizer"], float(tr["lr"]), float(tr["momentum"]), float(tr["weight_decay"]))
    batch = None if tr["batch_size"] == "full" else int(tr["batch_size"])

    print(
        f"# recording overhead: {args.config}, data {data.name} n_train={data.n_train}, "
        f"{tr['steps']} steps of batch {tr['batch_size']}, record every {rec['every']} on probe {rec['probe']}"
    )
    print(
        f"# {platform.node()} {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, best of {args.repeats} after one compile run"
    )
    print(
        f"{'width':>6}{'bare (s)':>10}{'recorded (s)':>14}{'overhead':>10}{'eNTKs':>7}{'per eNTK (ms)':>15}"
        f"{'first run (s)':>15}"
    )
    for width in widths:
        model = make_model(
            {**cfg["model"], "width": width}, key=jax.random.key(0), in_shape=data.in_shape, out_size=data.n_outputs
        )

        def once(recorded: bool, model=model):
            recorder = (
                Recorder(every=rec["every"], probe=rec["probe"], measures=rec["measures"], log_points=rec["log_points"])
                if recorded
                else None
            )
            t0 = time.perf_counter()
            _, ds = train(
                model,
                data,
                optimizer=opt,
                steps=int(tr["steps"]),
                batch_size=batch,
                loss=tr["loss"],
                recorder=recorder,
                key=jax.random.key(1),
            )
            jax.block_until_ready(jax.tree_util.tree_leaves(ds))
            return time.perf_counter() - t0, ds

        first, ds = once(True)
        once(False)
        best = {True: float("inf"), False: float("inf")}
        for r in range(args.repeats):
            for side in (True, False) if r % 2 == 0 else (False, True):
                best[side] = min(best[side], once(side)[0])
        n_entk = ds.sizes.get("step", 0)
        per = (best[True] - best[False]) / max(n_entk, 1)
        print(
            f"{width:>6}{best[False]:>10.2f}{best[True]:>14.2f}{best[True] / best[False]:>9.2f}x"
            f"{n_entk:>7}{1e3 * per:>15.1f}{first:>15.2f}"
        )


if __name__ == "__main__":
    main()
