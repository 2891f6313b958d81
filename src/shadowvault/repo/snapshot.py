"""Snapshots: small documents that name a root tree, what was backed up, and how consistent it is."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

# The times a datetime can show, with a day to spare for time zones: a snapshot comes from whoever
# holds the password, and a time of NaN, infinity or 1e300 ended `snapshots` and `forget` in an
# internal error. A snapshot out of this range does not decode: it is damaged (skipped, named).
EARLIEST_TIME = -62135596800.0 + 86400  # 0001-01-02 00:00:00 UTC
LATEST_TIME = 253402300799.0 - 86400  # 9999-12-30 23:59:59 UTC
SnapshotTime = Annotated[float, msgspec.Meta(ge=EARLIEST_TIME, le=LATEST_TIME)]


class Snapshot(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One backup. Stored encrypted under snapshots/<id>; the id is the BLAKE3 hash of the stored bytes."""

    time: SnapshotTime  # seconds since the epoch (UTC) when the backup started
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


def summary_bytes(snapshot: Snapshot) -> int | None:
    """The snapshot's size as its summary records it; None when absent or not a count of bytes
    (a summary is free-form and comes from whoever holds the password: "lots" or -3 once ended
    `snapshots` and `repair snapshots` in an internal error)."""
    size = snapshot.summary.get("bytes")
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def _derivations(snapshot: Snapshot) -> int:
    """How many rewrites and repairs made this snapshot from the one it copies (read from its
    summary, which each records in; a hostile summary counts as none)."""
    rewritten = snapshot.summary.get("rewritten")
    count = len(rewritten) if isinstance(rewritten, list) else 0
    return count + (1 if "repaired_lost" in snapshot.summary else 0)
