"""What bounds the ``data`` paper's ``power`` run: one budget's runs, timed by part.

The ``power`` config (``ntkbench.papers.data.configs("power")``) runs 2 000 random subsets
at each of N = 200, 500 and 1 000: an MLP 128 × 2 trained 300 full-batch Adam steps, the
traced eNTK of the subset and its spectrum at the start and the end, then one run file.
This times, in one process on one budget (``--budget``, default 1 000), median of
``--runs`` after a warm-up:

- ``sweep run``: a run of a sweep of ``--runs`` subsets, per run (what the power run does);
- ``training``: the same with only the final test accuracy recorded (no kernel);
- ``eNTK``: ``nb.entk`` of the N selected inputs under the initial network;
- ``spectrum``: ``nb.spectrum`` of that N × N kernel;
- ``run file``: ``ntkbench.cube.save`` of one finished run's cube (atomic, fsynced).

and prints each as a share of a sweep run. A training-only run less its file is the
training with the run's selection, model build and the sweep's bookkeeping.

    python benchmarks/data_power_profile.py              # N = 1000, 30 runs
    python benchmarks/data_power_profile.py --quick      # N = 200, 20 runs
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up (compile)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 200, 20 runs")
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args(argv)
    if args.quick:
        args.budget, args.runs = 200, 20

    import jax
    import jax.numpy as jnp
    import numpy as np

    import ntkbench as nb
    from ntkbench import cube
    from ntkbench.papers import data

    cfg = data.configs("power")["subsets"]
    train_only = {**cfg, "record": {**cfg["record"], "every": [cfg["train"]["steps"]], "measures": ["test_accuracy"]}}
    tmp = Path(tempfile.mkdtemp(prefix="ntkbench-power-profile-"))
    counter = iter(range(10**6))

    def per_run(c) -> float:
        """Seconds per run of a sweep of ``args.runs`` subsets (after a warm-up sweep that
        compiles): the sweep's set-up and final cube are spread over its runs, as in the
        power run's 2 000."""

        def go(n):
            seeds = [next(counter) for _ in range(n)]
            nb.sweep({**c, "grid": {"budget": [args.budget], "seed": seeds}}, tmp / f"sweep-{seeds[0]}", progress=False)

        go(1)
        t0 = time.perf_counter()
        go(args.runs)
        return (time.perf_counter() - t0) / args.runs

    t_run = per_run(cfg)
    t_train = per_run(train_only)
    ds = nb.load("mnist1d", 8000, 2000, seed=0)
    x = jnp.asarray(ds.x_train[: args.budget])
    model = nb.MLP(40, 10, width=128, depth=2, key=jax.random.key(0))
    t_entk = _median_time(lambda: nb.entk(model, x).block_until_ready(), args.runs)
    K = nb.entk(model, x)
    t_eigh = _median_time(lambda: nb.spectrum(K).block_until_ready(), args.runs)
    run_cube = nb.open_cube(next(tmp.glob("sweep-*/run-*.nc"))).load()
    t_save = _median_time(lambda: cube.save(run_cube, tmp / "save" / "run.nc"), args.runs)

    print(f"data power profile: N = {args.budget}, median of {args.runs}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")  # fmt: skip
    rows = [
        ("sweep run (what the power run does)", t_run),
        ("  the two kernel records (run - training-only run)", t_run - t_train),
        ("    eNTK, 2 x nb.entk", 2 * t_entk),
        ("    spectrum, 2 x nb.spectrum", 2 * t_eigh),
        ("  training-only run (300 Adam steps, accuracy, file)", t_train),
        ("    its run file (cube.save, atomic, fsynced)", t_save),
    ]
    for name, t in rows:
        print(f"  {name:<55} {t * 1e3:8.1f} ms  {100 * t / t_run:4.0f} %")
    np.testing.assert_array_less(0, t_run)


if __name__ == "__main__":
    main()
