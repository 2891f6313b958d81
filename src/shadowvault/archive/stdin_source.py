"""A stream (a database dump piped in) stored as one regular file: `backup --stdin`.

The stream has no metadata of its own, so the file gets what restic gives it: mode 0644, owned by
whoever ran the backup, modified now. It is recorded at an absolute path (`/NAME` for a plain
name); the directories above it exist nowhere, so they are made up (mode 0755, the same time).
"""

from __future__ import annotations

import os
from typing import BinaryIO

from shadowvault.archive import metadata
from shadowvault.archive.store import BlobStore
from shadowvault.archive.walk_stats import WalkStats
from shadowvault.errors import UsageError
from shadowvault.repo.format import BlobType
from shadowvault.repo.tree import Node, Tree, invalid_name

FILE_MODE = 0o644
DIR_MODE = 0o755


def stdin_path(name: str) -> str:
    """The absolute path a stream named `name` is recorded at (UsageError for an unusable name)."""
    parts = [p for p in name.split("/") if p]
    for part in parts:
        why = invalid_name(os.fsencode(part))
        if why is not None:
            raise UsageError(f"--stdin-filename {name!r}: {why}")
    if not parts:
        raise UsageError("--stdin-filename needs a file name")
    return "/" + "/".join(parts)


def _owned(name: bytes, type_name: str, mode: int, when_ns: int) -> Node:
    uid, gid = os.getuid(), os.getgid()
    return Node(
        name=name,
        type=type_name,
        mode=mode,
        uid=uid,
        gid=gid,
        user=metadata.user_name(uid),
        group=metadata.group_name(gid),
        mtime_ns=when_ns,
        atime_ns=when_ns,
        ctime_ns=when_ns,
    )


def archive_stream(store: BlobStore, stream: BinaryIO, path: str, stats: WalkStats, when_ns: int) -> bytes:
    """Store everything `stream` holds as the file at `path` (from `stdin_path`); the root TREE id."""
    parts = [os.fsencode(p) for p in path.split("/") if p]
    node = _owned(parts[-1], "file", FILE_MODE, when_ns)
    stats.current_path = os.fsencode(path)
    for chunk in store.chunker.chunk_file(stream):
        node.content.append(store.save_blob(BlobType.DATA, chunk))
        node.size += len(chunk)
        with stats.lock:
            stats.bytes_read += len(chunk)
            stats.bytes_done += len(chunk)
            stats.bytes_total += len(chunk)
    with stats.lock:
        stats.files_new, stats.files_done = 1, 1
    for name in reversed(parts[:-1]):
        subtree = store.save_tree(Tree(nodes=[node]))
        node = _owned(name, "dir", DIR_MODE, when_ns)
        node.subtree = subtree
        stats.dirs += 1
    return store.save_tree(Tree(nodes=[node]))
