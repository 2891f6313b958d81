"""The archive side of a backup: which paths are recorded, which snapshot is the parent, the summary.

The backup job (jobs/backup.py) takes the shadow set and hands the archiver the trees to read; what
is here knows nothing of shadow sets. Paths are recorded as the original absolute paths; a path
inside another requested path is dropped (the outer one covers it). Incremental against the newest
snapshot of the same paths from the same host: a file whose inode, size, mtime and ctime are
unchanged reuses the parent's blobs without being read.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable
from typing import Any

from shadowvault.archive.walk_stats import WalkStats
from shadowvault.errors import NotFoundError
from shadowvault.paths_within import is_within
from shadowvault.repo.snapshot import Snapshot, chronological

FILES_COMPONENT = "files"
SUMMARY_PATHS = 100  # error and warning paths kept in a snapshot's summary


def normalize_path(path: str) -> bytes:
    """Absolute path, parent directories resolved (the last component is kept: a symlink stays one)."""
    raw = os.fsencode(path)
    absolute = os.path.abspath(raw)
    if absolute == b"/":
        return absolute
    parent, name = os.path.split(absolute)
    resolved = os.path.join(os.path.realpath(parent), name)
    if not os.path.lexists(resolved):
        raise NotFoundError(f"{path}: no such file or directory")
    return resolved


def recorded_below(path: str, source_root: bytes) -> bytes:
    """An absolute recorded path for `path` of a foreign source root; it must exist below that root."""
    recorded = os.path.normpath(b"/" + os.fsencode(path).lstrip(b"/"))
    if not os.path.lexists(below(source_root, recorded)):
        raise NotFoundError(f"{path}: no such file or directory below {os.fsdecode(source_root)}")
    return recorded


def below(source_root: bytes, path: bytes) -> bytes:
    """Where the recorded `path` is read when the source is another machine's tree at `source_root`."""
    return path if source_root == b"/" else source_root.rstrip(b"/") + path


def drop_nested(paths: list[bytes]) -> list[bytes]:
    """Remove paths that lie inside another requested path (it already covers them)."""
    result: list[bytes] = []
    for path in sorted(set(paths)):
        if any(is_within(os.fsdecode(path), os.fsdecode(p)) for p in result):
            continue
        result.append(path)
    return result


def find_parent(
    snapshots: Iterable[tuple[str, Snapshot]], paths: list[str], host: str, *, before: float | None = None
) -> tuple[str, Snapshot] | None:
    """The newest of `snapshots` of exactly these paths from this host (not newer than `before`, a
    backup's --time, when given: restic's rule); of a snapshot and its rewritten or repaired copy,
    the copy (snapshot.chronological)."""
    wanted = sorted(paths)
    candidates = [
        (snap_id, snap)
        for snap_id, snap in snapshots
        if (before is None or snap.time <= before) and snap.host == host and sorted(snap.paths) == wanted
    ]
    return max(candidates, key=chronological, default=None)


def snapshot_summary(
    stats: WalkStats, *, added_bytes: int | None, duration: float, freeze_window: float | None
) -> dict[str, Any]:
    """The `summary` a snapshot keeps: the walk's counters, what was added, the first problem paths."""
    return {
        **stats.as_dict(),
        "bytes": stats.bytes_total,
        "added_bytes": added_bytes,
        "duration": round(duration, 3),
        "freeze_window": freeze_window,
        "error_paths": [path for path, _ in stats.errors[:SUMMARY_PATHS]],
        # stored, but worth a look: changed while read, vanished before read
        "warning_paths": [path for path, _ in stats.warnings[:SUMMARY_PATHS]],
        **skipped_summary(stats),
    }


def skipped_summary(stats: WalkStats) -> dict[str, Any]:
    """What the exclude rules left out on purpose: a count per kind, and the first paths with why."""
    return {
        "skipped": dict(stats.skipped),
        "skipped_paths": [
            {"path": path, "kind": kind, "reason": reason}
            for path, kind, reason in stats.skipped_paths[:SUMMARY_PATHS]
        ],
    }


def username() -> str:
    """Who ran the backup, as the snapshot records it."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
