"""Sweeps on dask: the local cluster of ``sweep(workers=N)`` (:func:`local_cluster`), and
the run loop that submits the runs this sweep claims to a cluster's workers and collects
them, Ctrl-C letting the runs in progress finish and cancelling the queued ones."""

from __future__ import annotations

import time
import uuid
from typing import Any

from ntkbench.sweep import _run as _run_module
from ntkbench.sweep._live import RunStopped
from ntkbench.sweep._locks import _RunLocks
from ntkbench.sweep._loop import _claim, _Progress

#: ``LocalCluster`` keywords for no dashboard: the scheduler's HTTP server (health and
#: metrics routes) still starts, on a free localhost port. ``dashboard_address=None`` took
#: 0.0.0.0:8787 in threads mode and 127.0.0.1:8787 with processes, so a second cluster on
#: the machine (another sweep, a test in parallel) could fail: "Port 8787 is already in use".
NO_DASHBOARD: dict[str, Any] = {"dashboard_address": "127.0.0.1:0", "scheduler_kwargs": {"dashboard": False}}


def local_cluster(workers: int):
    """The ``dask.distributed.LocalCluster`` of ``sweep(workers=N)``: N single-threaded
    worker processes; scheduler and workers listen on 127.0.0.1 only (free ports), no
    dashboard (:data:`NO_DASHBOARD`). For several machines start a cluster yourself and
    pass ``scheduler="tcp://host:port"``
    (``dask scheduler`` / ``dask worker`` on a network you trust: dask has no
    authentication unless you configure TLS)."""
    from dask.distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        **NO_DASHBOARD,
    )


def _executing_keys(client: Any) -> set:
    """Keys of the tasks the workers are executing now (not those queued on them)."""

    def executing(dask_worker: Any) -> list:
        return [ts.key for ts in dask_worker.state.executing]

    try:
        return {key for keys in client.run(executing).values() for key in keys}
    except Exception:  # noqa: BLE001 - an older worker API: count everything assigned as running
        return {key for keys in client.processing().values() for key in keys}


def _wait_for_cancelled(client: Any, keys: set, timeout: float = 120.0) -> None:
    """Wait until no task of ``keys`` executes on a worker. A queued run cancelled on stop
    may already have started on its worker (the cancel reaches the worker later), and dask
    cannot interrupt it: it stops at its next recording (the stop request) and removes its
    progress file. Waiting here means that when the sweep returns, none of its runs is still
    executing."""
    deadline = time.monotonic() + timeout
    while keys & _executing_keys(client) and time.monotonic() < deadline:
        time.sleep(0.05)


def _run_distributed(todo: list, locks: _RunLocks, state: _Progress, *, workers, scheduler, client) -> list:
    """Run the runs of ``todo`` this sweep can lock on dask; return those another holds."""
    from dask.distributed import Client, as_completed

    held: list = []
    mine = [(run, path) for run, path in todo if _claim(run, path, locks, state, held)]
    if not mine:
        return held
    own_cluster = own_client = None
    try:
        if client is None:
            if workers is not None:
                own_cluster = local_cluster(workers)
                own_client = Client(own_cluster)
            else:
                own_client = Client(scheduler)
            client = own_client
        futures = {
            client.submit(
                _run_module._run_to_file,  # looked up on its module: see _sweep._run_in_process
                run,
                str(path),
                *state.live_args,
                pure=False,
                key=f"ntkbench-{path.stem}-{uuid.uuid4().hex[:8]}",
            ): path
            for run, path in mine
        }
        errors = []
        finished = as_completed(futures)
        stopping = False
        while not finished.is_empty():
            if not stopping and state.interrupt_requested():
                stopping = True  # Ctrl-C: let the runs in progress finish, drop the queued ones
                running = _executing_keys(client)
                for fut, path in futures.items():
                    if not fut.done() and fut.key not in running:
                        fut.cancel()
                        locks.release(path)
                state.say(f"waiting for the {len(running)} run(s) in progress on the workers")
            if not finished.has_ready():
                time.sleep(0.02)  # a poll interval: Ctrl-C is looked at between completions
                continue
            for fut in finished.next_batch(block=False):
                path = futures[fut]
                try:
                    if fut.cancelled():
                        continue
                    result = fut.result()
                except RunStopped:  # asked to stop: not an error
                    pass
                except Exception as exc:  # keep going: finished runs stay on disk for resume
                    errors.append((path, exc))
                else:
                    state.finished(path, result)
                finally:
                    locks.release(path)
                    fut.release()  # done: the cluster may forget it (a lost worker does not rerun it)
        if stopping:
            _wait_for_cancelled(client, {fut.key for fut in futures})
        state.check_interrupt()
        if errors:
            path, exc = errors[0]
            raise RuntimeError(f"{len(errors)} run(s) failed; first: {path.name}: {exc!r}") from exc
    finally:
        for _, path in mine:
            locks.release(path)
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
    return held
