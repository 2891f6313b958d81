"""The backup job for a stream: `backup --stdin --stdin-filename NAME` (a dump piped in).

No volumes are read, so no shadow set is taken: the stream is as consistent as the program that
wrote it. The snapshot's paths record the file (`/NAME`), so `forget` groups the dumps of one name
together and `restore` lays it back down as NAME.
"""

from __future__ import annotations

import socket
import time
from typing import BinaryIO

from shadowvault import __version__
from shadowvault.archive.backup import FILES_COMPONENT, find_parent, snapshot_summary, username
from shadowvault.archive.stdin_source import archive_stream, stdin_path
from shadowvault.archive.walk_stats import WalkStats
from shadowvault.jobs.backup import BackupRequest, BackupResult, would_change
from shadowvault.repo.dry_run_store import DryRunStore
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot


def run_stdin_backup(
    repo: Repository,
    request: BackupRequest,
    stream: BinaryIO,
    filename: str,
    *,
    stats: WalkStats | None = None,
) -> BackupResult:
    """Store `stream` as the file `filename` in a new snapshot (counted only, with `request.dry_run`)."""
    started, started_wall = time.monotonic(), time.time()
    path = stdin_path(filename)
    host = request.host or socket.gethostname()
    stats = stats or WalkStats()
    store = DryRunStore(repo) if request.dry_run else repo
    added_before = store.stats.stored_bytes_added
    parent = (
        repo.find_snapshot(request.parent)
        if request.parent
        else find_parent(repo.list_snapshots(), [path], host, before=request.time)
    )
    # the file is modified at the snapshot's time (restic's rule, with --time too)
    when_ns = time.time_ns() if request.time is None else int(request.time * 1e9)
    root = archive_stream(store, stream, path, stats, when_ns)
    with stats.lock:
        stats.scan_files, stats.scan_bytes, stats.scan_finished = 1, stats.bytes_total, True
    duration = time.monotonic() - started
    added_bytes = store.stats.stored_bytes_added - added_before
    snapshot = Snapshot(
        time=started_wall if request.time is None else request.time,
        host=host,
        username=username(),
        paths=[path],
        tags=list(request.tags),
        tree=root,
        parent=parent[0] if parent else None,
        components=[FILES_COMPONENT],
        consistency={FILES_COMPONENT: "none"},  # whatever the program that wrote the stream made it
        summary=snapshot_summary(stats, added_bytes=added_bytes, duration=duration, freeze_window=None),
        program_version=__version__,
    )
    if request.dry_run:
        changes = would_change(store, parent, root, [path])  # only the file itself is backed up
        return BackupResult("", snapshot, stats, duration, None, added_bytes, [], True, changes)
    snapshot_id = repo.save_snapshot(snapshot)
    return BackupResult(snapshot_id, snapshot, stats, time.monotonic() - started, None, added_bytes, [])
