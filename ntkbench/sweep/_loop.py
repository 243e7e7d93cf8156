"""What the two run loops share (in-process in ``_sweep``, on dask in ``_dask``): the
sweep's progress (bar, counts, messages, stop and Ctrl-C requests), the Ctrl-C handler,
and claiming a run: skip it when done or held by another sweep, else lock it and clear the
temp files a killed writer left."""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ntkbench.sweep._folder import _run_state
from ntkbench.sweep._live import STOP_FILE
from ntkbench.sweep._locks import _holder, _remove_temp_files, _RunLocks


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by Ctrl-C after its current run; the message says how to resume."""


class _CtrlC:
    """In the main thread: the first SIGINT asks the sweep to stop after its current run,
    a second one stops at once (KeyboardInterrupt)."""

    def __init__(self, say: Any) -> None:
        self.requested = False
        self._say = say
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._say("interrupt: stopping after the current run (Ctrl-C again to stop at once)")

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


@dataclasses.dataclass
class _Progress:
    """What the run loops share: the bar, counts, messages, Ctrl-C."""

    bar: Any
    out: Path
    total: int
    done: int
    ctrl_c: Any = None
    announced: set = dataclasses.field(default_factory=set)
    live: bool = False

    def say(self, message: str) -> None:
        self.bar.write(f"sweep: {message}", file=sys.stderr)

    def advance(self, path: Path | None = None) -> None:
        self.done += 1
        if path is not None:
            self.bar.set_postfix_str(path.stem[4:] or "run", refresh=False)
        self.bar.update()

    def held_by_other(self, path: Path, info: Mapping[str, Any]) -> None:
        if path not in self.announced:
            self.announced.add(path)
            self.say(
                f"{path.name} is being run by another sweep ({_holder(info)}); skipping it for now, "
                "its result is picked up at the end"
            )

    @property
    def live_args(self) -> tuple:
        """``_run_to_file``'s extra arguments: ``(True,)`` when live (none otherwise)."""
        return (True,) if self.live else ()

    def stop_requested(self) -> bool:
        return self.live and (self.out / STOP_FILE).exists()

    def interrupt_requested(self) -> bool:
        """Asked to stop: the stop file of a live sweep, or Ctrl-C."""
        return self.stop_requested() or (self.ctrl_c is not None and self.ctrl_c.requested)

    def finished(self, path: Path, result: Mapping[str, Any]) -> None:
        """A run of this sweep finished: warn of a diverged one or NaN/Inf values, count it."""
        _report(self.bar, path, result)
        self.advance(path)

    def check_interrupt(self) -> None:
        if self.stop_requested():
            raise SweepInterrupted(
                f"sweep stopped: {self.done} of {self.total} runs finished in {str(self.out)!r}; "
                "run again (the same config and out) to resume"
            )
        if self.ctrl_c is not None and self.ctrl_c.requested:
            raise SweepInterrupted(
                f"sweep interrupted: {self.done} of {self.total} runs finished in {str(self.out)!r}; "
                "rerun the same command (or ntkbench.sweep with the same config and out) to resume"
            )


def _report(bar: Any, path: Path, result: Mapping[str, Any]) -> None:
    step = result.get("diverged_step")
    if step is not None:
        bar.write(
            f"warning: {path.name}: training diverged at step {step} (NaN/Inf parameters, loss or kernel) and "
            f"stopped; its later values are NaN, and the combined cube lists it in attribute 'diverged_runs' "
            "(try a smaller lr)",
            file=sys.stderr,
        )
    elif result.get("bad"):
        bar.write(
            f"warning: {path.name}: NaN/Inf in {result['bad']} (undefined values, e.g. a zero kernel's entropy)",
            file=sys.stderr,
        )


def _claim(run: Mapping[str, Any], path: Path, locks: _RunLocks, state: _Progress, held: list) -> bool:
    """Whether this sweep is to run ``run`` now: True when it holds the run's lock and the
    run is not finished (its temp files are then removed). False when the run is finished
    (counted as done; by another sweep meanwhile, too) or another sweep holds its lock
    (announced, and added to ``held`` to be waited for)."""
    if _run_state(path, run)[0] == "done":  # finished by another sweep meanwhile
        state.advance(path)
        return False
    info = locks.acquire(path)
    if info is not None:
        state.held_by_other(path, info)
        held.append((run, path))
        return False
    if _run_state(path, run)[0] == "done":  # finished between the look and the lock
        locks.release(path)
        state.advance(path)
        return False
    _remove_temp_files(path)
    return True
