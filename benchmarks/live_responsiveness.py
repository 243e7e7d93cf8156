"""How fast the live Explorer answers a control while a live sweep runs (issue 17).

Runs the quickstart's width sweep live from a ``RunPanel`` (in-process, background
thread), and while it runs moves the Explorer's step slider and switches its measure from
this (the notebook's) thread, timing each redraw; then the same moves on the finished
cube with nothing running. Prints the median and worst redraw time of each.

    .venv/bin/python benchmarks/live_responsiveness.py [--steps 150] [--moves 40]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from ntkbench.widgets import RunPanel


def _moves(ex, n: int, start: int = 0) -> list[float]:
    """Time ``n`` control changes (each a real change: step and measure alternate)."""
    steps = [v for _, v in ex.step.options]
    measures = list(ex.measure.options)
    times = []
    for i in range(start, start + n):
        t = time.perf_counter()
        if i % 2:
            ex.measure.value = measures[(i // 2 + 1) % len(measures)]
        else:
            ex.step.value = steps[(i // 2 * 7 + 1) % len(steps)]
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--moves", type=int, default=40)
    args = ap.parse_args()
    config = {
        "title": "quickstart",
        "seed": 0,
        "model": {"name": "mlp", "width": 64, "depth": 2},
        "data": {"name": "digits", "n_train": 256, "n_test": 128},
        "train": {"optimizer": "sgd", "lr": 0.05, "steps": args.steps, "batch_size": 64, "loss": "mse"},
        "record": {"every": 15, "probe": 48},
        "grid": {"width": [32, 128, 512], "seed": [0, 1]},
    }
    with tempfile.TemporaryDirectory() as out:
        panel = RunPanel(config, out=out, poll=0.2)
        panel.start()
        while panel.explorer is None:
            time.sleep(0.05)  # a poll: the explorer appears at the first recording
        during = []
        while panel._thread is not None and panel._thread.is_alive():
            during += _moves(panel.explorer, 2, len(during))
            if len(during) >= args.moves:
                break
        panel.run(timeout=3600)
        idle = _moves(panel.explorer, args.moves)
    for name, ts in (("during the run", during), ("after the run", idle)):
        ms = [1e3 * t for t in ts]
        print(
            f"{name}: {len(ms)} control changes, redraw median {statistics.median(ms):.0f} ms, worst {max(ms):.0f} ms"
        )
    print(f"live updates of the explorer during the run: {panel.updates}")


if __name__ == "__main__":
    main()
