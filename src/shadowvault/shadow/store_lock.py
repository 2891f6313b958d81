"""The shadow-set store's lock: an flock on a file, re-entrant within this process.

Several processes (create, delete, reap) work on the store at once; the lock keeps records from
changing under one of them. flock itself would deadlock on re-entry within a process, so each
lock file has one re-entrant lock object per process, and a forked child forgets the parent's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path

from shadowvault.errors import PermissionDeniedError


class ProcessLock:
    """An flock on a file, re-entrant within this process."""

    def __init__(self, path: Path):
        self.path = path
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None

    def __enter__(self) -> None:
        self.rlock.acquire()
        try:
            if self.depth == 0:
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                except PermissionError as err:
                    raise PermissionDeniedError(
                        f"cannot lock {self.path}: permission denied (shadow sets are managed by root)"
                    ) from err
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self.fd = fd
            self.depth += 1
        except BaseException:
            self.rlock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if self.depth == 0 and self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.rlock.release()


_locks: dict[str, ProcessLock] = {}
_locks_guard = threading.Lock()


def _forget_locks_in_child() -> None:
    """After fork: the child must not keep the parent's flock alive (a watchdog child would)."""
    global _locks_guard
    _locks_guard = threading.Lock()
    for lock in _locks.values():
        if lock.fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock.fd)
        lock.fd, lock.depth, lock.rlock = None, 0, threading.RLock()


os.register_at_fork(after_in_child=_forget_locks_in_child)


def lock_for(path: Path) -> ProcessLock:
    """This process's lock on `path` (one per file)."""
    with _locks_guard:
        key = str(path)
        if key not in _locks:
            _locks[key] = ProcessLock(path)
        return _locks[key]
