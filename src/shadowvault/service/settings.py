"""Where the daemon listens and the bounds every request lives within."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SOCKET = "/run/shadowvault/api.sock"


def socket_path() -> Path:
    """The API socket (`SHADOWVAULT_SOCKET`, default /run/shadowvault/api.sock)."""
    return Path(os.environ.get("SHADOWVAULT_SOCKET") or DEFAULT_SOCKET)


@dataclass(frozen=True)
class Limits:
    """Bounds of one request: a client cannot make the daemon hold much memory or wait long on it.

    body_bytes: the largest request body (413 past it)
    read_timeout: seconds a client has to send a request body (408 past it)
    idle_timeout: seconds an idle connection stays open (it also bounds a client that never
        finishes its request line and headers); a connection that owns a set is never idle
    """

    body_bytes: int = 64 * 1024
    read_timeout: float = 30.0
    idle_timeout: float = 3600.0


DEFAULT_LIMITS = Limits()

WORKER_THREADS = 8  # blocking calls (listing, deleting, releasing) run on at most this many threads
COORDINATOR_THREADS = 4  # set creations wait here for the machine lock, apart from the other calls
