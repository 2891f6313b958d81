"""Writer sessions: how prune knows which backups may still reference old data (no locks).

See docs/repository.md, "Sessions (no locks)".
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

from shadowvault.errors import NotFoundError, RepositoryError, ShadowvaultError
from shadowvault.proc import pid_alive
from shadowvault.repo.backend import Backend, load_listed
from shadowvault.repo.format import SessionDoc, decode_document, encode_document
from shadowvault.repo.sealing import Sealer

log = logging.getLogger(__name__)

SESSION_AAD = b"sv1:session"
REFRESH_EVERY = 300.0  # seconds
STALE_AFTER = 1800.0  # a session file not refreshed for this long is dead
SAFE_FOR = 1500.0  # a writer that has not refreshed for this long may no longer save a snapshot


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class SessionInfo:
    name: str  # sessions/<hex>
    doc: SessionDoc | None  # None when the file could not be read (treated as live while fresh)
    mtime: float


def list_sessions(backend: Backend, sealer: Sealer) -> list[SessionInfo]:
    found = []
    for info in backend.list("sessions/"):
        try:
            plain = sealer.open(load_listed(backend, info), SESSION_AAD, info.name)
            doc = decode_document(plain, SessionDoc, info.name)
        except NotFoundError:
            continue
        except ShadowvaultError:
            doc = None
        found.append(SessionInfo(info.name, doc, info.mtime))
    return found


def is_live(session: SessionInfo, now: float | None = None) -> bool:
    """Fresh enough, and not a dead process of this very machine. A file dated more than
    STALE_AFTER ahead is no live session's either (each dates its file by the storage's clock every
    REFRESH_EVERY): `touch -d 2036` on any file under sessions/ held every prune back for years."""
    now = time.time() if now is None else now
    if abs(now - session.mtime) > STALE_AFTER:
        return False
    doc = session.doc
    if doc is not None and doc.host == socket.gethostname() and doc.boot_id == boot_id():
        return pid_alive(doc.pid)
    return True


def live_sessions(backend: Backend, sealer: Sealer) -> list[SessionInfo]:
    return [s for s in list_sessions(backend, sealer) if is_live(s)]


# one at a time: prune and repair rewrite the index; a rewrite references the blobs of the snapshots
# it rewrites, which only a prune could remove meanwhile (archive/rewrite.py)
MAINTENANCE_KINDS = frozenset({"prune", "repair", "rewrite"})


def refuse_concurrent_maintenance(sessions: list[SessionInfo], what: str) -> None:
    """Raise when one of `sessions` (other than our own) is a live prune, repair or rewrite."""
    for s in sessions:
        if s.doc is not None and s.doc.kind in MAINTENANCE_KINDS and is_live(s):
            raise RepositoryError(
                f"{what} refuses to run: a {s.doc.kind} is running (pid {s.doc.pid} on {s.doc.host});"
                " try later"
            )


def _clock() -> float:
    """Seconds that keep counting through a system suspend (CLOCK_BOOTTIME)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class Session:
    """This process's session file, refreshed by a daemon thread until closed."""

    def __init__(self, backend: Backend, sealer: Sealer, kind: str) -> None:
        self._backend = backend
        self._sealer = sealer
        self.name = f"sessions/{secrets.token_hex(16)}"
        self.doc = SessionDoc(
            kind=kind, host=socket.gethostname(), pid=os.getpid(), start=time.time(), boot_id=boot_id()
        )
        self._stop = threading.Event()
        self.expired = False  # once other clients may have seen this session as dead, it stays so
        self._write()
        self.last_refresh = _clock()
        self._thread = threading.Thread(target=self._refresh_loop, name="sv-session", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        self._backend.save(self.name, self._sealer.seal(encode_document(self.doc), SESSION_AAD))

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            if self._lapsed():
                return
            try:
                self._backend.stat(self.name)  # gone: a prune judged this session dead
            except NotFoundError:
                self.expired = True
                return
            except ShadowvaultError:
                pass
            try:
                self._write()
                self.last_refresh = _clock()
            except ShadowvaultError as err:
                log.warning("cannot refresh session %s: %s", self.name, err)

    def _lapsed(self) -> bool:
        """True (for good) once the session went unrefreshed long enough to look dead to others:
        after a hang, a SIGSTOP or a suspend, rewriting the file would hide that gap."""
        if _clock() - self.last_refresh > SAFE_FOR:
            self.expired = True
        return self.expired

    def ensure_valid(self) -> None:
        """Refuse to commit a snapshot if prune may have considered this session dead."""
        if self._lapsed():
            raise RepositoryError(
                "this backup's session expired (it could not be refreshed); run the backup again,"
                " the data already uploaded will be reused"
            )
        try:
            info = self._backend.stat(self.name)
        except NotFoundError as err:
            raise RepositoryError("this backup's session file disappeared; run the backup again") from err
        if time.time() - info.mtime > SAFE_FOR:  # what prune sees, by the storage's clock
            raise RepositoryError(
                "this backup's session looks expired to other clients; run the backup again,"
                " the data already uploaded will be reused"
            )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._backend.remove(self.name)
        except ShadowvaultError as err:
            log.warning("cannot remove session %s: %s", self.name, err)
