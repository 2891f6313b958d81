"""Snapshots: small documents that name a root tree, what was backed up, and how consistent it is."""

from __future__ import annotations

from typing import Any

import msgspec


class Snapshot(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One backup. Stored encrypted under snapshots/<id>; the id is the BLAKE3 hash of the stored bytes."""

    time: float  # seconds since the epoch (UTC) when the backup started
    host: str
    username: str = ""
    paths: list[str] = []  # the original absolute paths backed up
    tags: list[str] = []
    tree: bytes = b""  # root TREE blob id
    parent: str | None = None  # id of the snapshot used for incremental matching
    manifest: bytes | None = None  # DATA blob holding the shadow-set manifest (JSON), if a set was used
    components: list[str] = []  # components in this backup (files, user-profiles, system-state, ...)
    consistency: dict[str, str] = {}  # component -> consistency grade
    excludes: list[str] = []
    summary: dict[str, Any] = {}  # files, dirs, bytes, added bytes, duration, errors
    program_version: str = ""
    original: str | None = None  # the snapshot this one is a repaired copy of (`repair snapshots`)


def chronological(item: tuple[str, Snapshot]) -> tuple[float, bool, int, str]:
    """The order of (id, snapshot) pairs everywhere: by time, a repaired, rewritten or retagged copy
    right after its original (it keeps the original's time), and a copy made from such a copy (a
    retagged snapshot rewritten) after that one, so that "latest" and retention take the newest."""
    snapshot_id, snapshot = item
    return snapshot.time, snapshot.original is not None, _derivations(snapshot), snapshot_id


def _derivations(snapshot: Snapshot) -> int:
    """How many rewrites and repairs made this snapshot from the one it copies (read from its
    summary, which each records in; a hostile summary counts as none)."""
    rewritten = snapshot.summary.get("rewritten")
    count = len(rewritten) if isinstance(rewritten, list) else 0
    return count + (1 if "repaired_lost" in snapshot.summary else 0)
