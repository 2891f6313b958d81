"""Who is at the other end of a connection: the kernel's SO_PEERCRED, never what the client says."""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux 4.13; not in every Python's socket module
MAX_GROUPS = 4096  # room for the groups of any real user (ERANGE past it: no groups)


@dataclass(frozen=True)
class Peer:
    """The process that opened the connection, as the kernel recorded it at connect()."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int] = frozenset()  # supplementary groups (SO_PEERGROUPS)


def peer_of(transport: asyncio.BaseTransport | None) -> Peer | None:
    """The peer credentials of a Unix-socket transport (None when it has none, e.g. closed)."""
    sock = _unix_socket(transport)
    credentials = _credentials(sock)
    if sock is None or credentials is None:
        return None
    pid, uid, gid = credentials
    return Peer(pid=pid, uid=uid, gid=gid, groups=_peer_groups(sock))


def peer_uid(transport: asyncio.BaseTransport | None) -> int | None:
    """Only the peer's uid: what admitting a connection needs, without its groups."""
    credentials = _credentials(_unix_socket(transport))
    return None if credentials is None else credentials[1]


def _unix_socket(transport: asyncio.BaseTransport | None) -> socket.socket | None:
    sock = None if transport is None else transport.get_extra_info("socket")
    return sock if sock is not None and sock.family == socket.AF_UNIX else None


def _credentials(sock: socket.socket | None) -> tuple[int, int, int] | None:
    """pid, uid, gid as the kernel recorded them at connect()."""
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


def _peer_groups(sock: socket.socket) -> frozenset[int]:
    """The peer's supplementary groups as the kernel recorded them at connect()."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, MAX_GROUPS * 4)
    except OSError:
        return frozenset()
    return frozenset(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
