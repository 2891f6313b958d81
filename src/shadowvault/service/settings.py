"""Where the daemon listens and the bounds every request lives within."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_SOCKET = "/run/shadowvault/api.sock"


def socket_path() -> Path:
    """The API socket (`SHADOWVAULT_SOCKET`, default /run/shadowvault/api.sock)."""
    return Path(os.environ.get("SHADOWVAULT_SOCKET") or DEFAULT_SOCKET)


@dataclass(frozen=True)
class Limits:
    """Bounds of requests and connections: no client makes the daemon hold much memory, many
    descriptors or long waits, and no user other than root can keep root's calls out.

    body_bytes: the largest request body (413 past it)
    read_timeout: seconds a client has to send a request body (408 past it)
    header_timeout: seconds a client has, from the first byte of a request, to send its request
        line and headers (408 past it, and the connection is closed)
    idle_timeout: seconds a connection waits for its next request (or its first) before it is closed
    user_connections: connections one user other than root may hold at once (503 past it)
    connections: connections the daemon holds at once, root's included (503 past it)
    root_connections: how many of `connections` only root gets: users cannot take them all
    A connection that owns a set or has a request running is never closed for a timeout.
    """

    body_bytes: int = 64 * 1024
    read_timeout: float = 30.0
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    user_connections: int = 32
    connections: int = 512
    root_connections: int = 64

    def within(self, descriptors: int) -> Limits:
        """These limits, with at most half of `descriptors` (the daemon's RLIMIT_NOFILE) for
        connections: the rest is for the files, pipes and sockets of its work."""
        most = max(descriptors // 2, 16)
        if self.connections <= most:
            return self
        return replace(self, connections=most, root_connections=min(self.root_connections, most // 4))


DEFAULT_LIMITS = Limits()

WORKER_THREADS = 8  # blocking calls (listing, deleting, releasing) run on at most this many threads
COORDINATOR_THREADS = 4  # set creations wait here for the machine lock, apart from the other calls
