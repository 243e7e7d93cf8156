"""Run locks: one lock file per run (and per combined cube) so that two sweeps on one folder
never run the same run; stale locks of dead or silent holders, and the temp and scratch
files that killed processes leave behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Seconds without a heartbeat after which a run lock counts as stale (abandoned). A lock of
#: a process on this host is stale as soon as that process is gone; one of another host
#: (a shared file system) only by this age. Holders refresh their locks every
#: ``LOCK_HEARTBEAT`` seconds.
LOCK_STALE_AFTER = 600.0
LOCK_HEARTBEAT = 30.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    return True


def _read_lock(lock: Path) -> dict[str, Any] | None:
    """The lock's holder (``pid``, ``host``, ``token``, ``started``, ``age`` in seconds);
    None when there is no lock."""
    try:
        text = lock.read_text()
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError:
        return {"pid": None, "host": None, "token": None, "age": 0.0}
    info: dict[str, Any] = {"pid": None, "host": None, "token": None}
    with contextlib.suppress(ValueError):
        parsed = json.loads(text)
        if isinstance(parsed, dict):
            info = parsed
    info["age"] = max(age, 0.0)
    return info


def _holder(info: Mapping[str, Any]) -> str:
    return f"pid {info.get('pid')} on {info.get('host')}"


class _RunLocks:
    """One lock file per run, ``.<run file>.lock`` beside it: JSON of the holder's pid,
    host and a token, created atomically (``os.link`` of a complete file, so nobody reads a
    half-written lock) and refreshed by a heartbeat thread while held."""

    def __init__(self) -> None:
        self.host = socket.gethostname()
        self.pid = os.getpid()
        # names this process's scratch files (.new, .stale) so a later sweep can remove
        # those a killed process left: <host hash>-<pid>
        self.tag = f"{_host_hash(self.host)}-{self.pid}"
        self.held: dict[Path, str] = {}
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def path(target: Path) -> Path:
        return target.with_name(f".{target.name}.lock")

    def stale(self, info: Mapping[str, Any]) -> bool:
        pid = info.get("pid")
        if info.get("host") == self.host and isinstance(pid, int) and not _pid_alive(pid):
            return True
        return float(info.get("age", 0.0)) > LOCK_STALE_AFTER

    def acquire(self, target: Path) -> dict[str, Any] | None:
        """Take the lock of ``target``; None if taken, else the holder's info. A stale
        lock (its process is gone, or no heartbeat for ``LOCK_STALE_AFTER`` s) is taken over."""
        lock = self.path(target)
        token = uuid.uuid4().hex
        body = json.dumps({"pid": self.pid, "host": self.host, "token": token, "started": time.time()})
        new = lock.with_name(f"{lock.name}.{self.tag}-{token[:8]}.new")
        new.write_text(body)
        try:
            for _ in range(5):
                try:
                    os.link(new, lock)
                except FileExistsError:
                    info = _read_lock(lock)
                    if info is None:
                        continue  # released meanwhile: try again
                    if not self.stale(info):
                        return info
                    self._take_over(lock, info)
                    continue
                with self._mutex:
                    self.held[lock] = token
                self._beat()
                return None
            return _read_lock(lock) or {"pid": None, "host": None}
        finally:
            new.unlink(missing_ok=True)

    def _take_over(self, lock: Path, info: Mapping[str, Any]) -> None:
        """Remove a stale lock, unless another process replaced it meanwhile."""
        aside = lock.with_name(f"{lock.name}.{self.tag}-{uuid.uuid4().hex[:8]}.stale")
        try:
            os.rename(lock, aside)
        except FileNotFoundError:
            return
        moved = _read_lock(aside) or {}
        if moved.get("token") != info.get("token"):  # a fresh lock: put it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, lock)
        aside.unlink(missing_ok=True)

    def clear_stale(self, target: Path) -> None:
        """Remove ``target``'s lock if stale (e.g. left by a process killed after writing
        the run), and lock scratch files of dead processes."""
        lock = self.path(target)
        info = _read_lock(lock)
        if info is not None and self.stale(info):
            self._take_over(lock, info)
        _remove_lock_scratch(target)

    def release(self, target: Path) -> None:
        lock = self.path(target)
        with self._mutex:
            token = self.held.pop(lock, None)
        if token is not None and (_read_lock(lock) or {}).get("token") == token:
            lock.unlink(missing_ok=True)

    def _beat(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._heartbeat, daemon=True, name="ntkbench-sweep-locks")
            self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT):
            with self._mutex:
                locks = list(self.held)
            for lock in locks:
                with contextlib.suppress(OSError):
                    os.utime(lock)

    def close(self) -> None:
        for lock in list(self.held):
            self.release(lock.with_name(lock.name[1 : -len(".lock")]))
        self._stop.set()


def _host_hash(host: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_DNS, host).hex[:6]


def _leftovers(target: Path) -> list[str]:
    """Names in ``target``'s folder that start with ``.<target name>.`` (its temp and lock
    scratch files): one listing, where three globs read the folder three times (a sweep of
    thousands of runs lists its folder once per run)."""
    prefix = f".{target.name}."
    try:
        with os.scandir(target.parent) as entries:
            return [e.name for e in entries if e.name.startswith(prefix)]
    except FileNotFoundError:
        return []


def _remove_temp_files(target: Path) -> None:
    """Temp files of ``target`` left by a process killed mid-write (cube.save's naming),
    and lock scratch files of dead processes of this host; call only while holding
    ``target``'s lock."""
    names = _leftovers(target)
    for name in names:
        if name.endswith(".tmp"):
            stale = target.parent / name
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
    _remove_lock_scratch(target, names)


def _remove_lock_scratch(target: Path, names: list[str] | None = None) -> None:
    """Lock scratch files (``.new``, ``.stale``) of dead processes of this host (``names``:
    :func:`_leftovers`, listed here when not given)."""
    mine = _host_hash(socket.gethostname())
    prefix = f".{target.name}.lock."
    for name in _leftovers(target) if names is None else names:
        if name.startswith(prefix) and name.endswith((".new", ".stale")):
            tag = name.split(".")[-2].split("-")
            if len(tag) == 3 and tag[0] == mine and tag[1].isdigit() and not _pid_alive(int(tag[1])):
                (target.parent / name).unlink(missing_ok=True)
