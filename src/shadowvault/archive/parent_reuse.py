"""A parent snapshot's file taken over unread: whether it is unchanged, and whether its blobs remain.

A file is unchanged when its stat says so (`metadata.same_content_metadata`). Read from a copy with
inodes of its own (a reflink shadow), it is unchanged when the live original it was copied from is
provably the one the parent snapshot recorded (same inode and ctime, older than the copy, same size
and mtime). Its content is reused only while every blob of it is stored (not lost, not found
damaged); otherwise it is read again.

restic's --ignore-inode and --ignore-ctime (`ChangeRules`) leave the inode number or the ctime out
of these tests, for filesystems where they are not stable (some FUSE and network filesystems).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from dataclasses import dataclass

import msgspec

from shadowvault.archive import metadata
from shadowvault.archive.entry_stat import EntryStat
from shadowvault.archive.store import BlobStore
from shadowvault.archive.walk_stats import Source, WalkStats
from shadowvault.errors import NotFoundError, RepositoryError
from shadowvault.repo.tree import Node


@dataclass(frozen=True)
class ChangeRules:
    """What the incremental test leaves out (restic's --ignore-inode, --ignore-ctime)."""

    ignore_inode: bool = False
    ignore_ctime: bool = False


def is_copy(source: Source) -> bool:
    """A source read from somewhere else whose root has another inode than the original's."""
    if source.copied is not None:
        return source.copied
    if source.read_path == source.orig_path:
        return False
    try:
        return os.lstat(source.read_path).st_ino != os.lstat(source.orig_path).st_ino
    except OSError:
        return False


def same_inode(
    old: Node | None, st: EntryStat, copied: bool, rules: ChangeRules = ChangeRules()
) -> Node | None:
    """The parent snapshot's node when it is this very inode, unchanged since (same inode number,
    same ctime, read whole; `metadata.capture` checks the type): its extended attributes need not
    be read again. Never for a copy (a reflink copy has an inode and ctime of its own), nor where
    inodes or ctimes are not to be trusted (`rules`)."""
    if (
        old is None
        or copied
        or rules.ignore_inode
        or rules.ignore_ctime
        or old.error is not None
        or old.inode != st.st_ino
        or old.ctime_ns != st.st_ctime_ns
    ):
        return None
    return old


def taken_over(old: Node, st: EntryStat) -> Node | None:
    """The parent snapshot's node, as it stands, when it is what `metadata.capture` would now make
    of this regular file with one link (same inode, ctime, mtime, size, permissions, owner and
    owner names, sparseness; its extended attributes too, since changing one moves the ctime), or
    with only its device number dropped (recorded by an older version: `metadata.recorded_device`):
    no node is built and no field copied, which was ~40 % of a no-change walk. None when any of it
    differs, or when the node holds what a capture derives anew (an ACL's user and group names) or
    never gives a regular file (an error, a subtree, a copy's original): the file then goes the
    full way.

    Only for a walk that records what `capture` records by default: no atimes, no copy (whose
    inodes are not the original's), inodes and ctimes trusted."""
    if (
        old.inode != st.st_ino
        or old.ctime_ns != st.st_ctime_ns
        or old.mtime_ns != st.st_mtime_ns
        or old.atime_ns != st.st_mtime_ns
        or old.size != st.st_size
        or st.st_nlink != 1
        or old.nlink != 1
        or old.type != "file"
        or st.st_mode != stat.S_IFREG | old.mode
        or old.uid != st.st_uid
        or old.gid != st.st_gid
        or old.error is not None
        or old.subtree is not None
        or old.link_target is not None
        or old.rdev is not None
        or old.orig_inode
        or old.orig_ctime_ns
        or (not old.sparse and st.st_blocks * 512 < st.st_size)
        or old.user != metadata.user_name(st.st_uid)
        or old.group != metadata.group_name(st.st_gid)
        or (old.xattrs and not old.xattrs.keys().isdisjoint(metadata.ACL_XATTRS))
        or old.acl_users
        or old.acl_groups
    ):
        return None
    return msgspec.structs.replace(old, device=0) if old.device else old


def record_original(orig: bytes, st: EntryStat, node: Node, copy_cutoff_ns: int) -> None:
    """Remember the live original's identity when it provably has the copy's content (its ctime
    older than `copy_cutoff_ns`, when the copies were started)."""
    try:
        live = os.lstat(orig)
    except OSError:
        return
    if (
        stat.S_ISREG(live.st_mode)
        and live.st_size == st.st_size
        and live.st_mtime_ns == st.st_mtime_ns
        and live.st_ctime_ns < copy_cutoff_ns
    ):
        node.orig_inode, node.orig_ctime_ns = live.st_ino, live.st_ctime_ns


def unchanged(old: Node, st: EntryStat, node: Node, copied: bool, rules: ChangeRules = ChangeRules()) -> bool:
    """The incremental test, on the copy's stat or, for a copy, on the original's identity."""
    if not copied:
        return metadata.same_content_metadata(
            old, st, ignore_inode=rules.ignore_inode, ignore_ctime=rules.ignore_ctime
        )
    return (
        node.orig_inode != 0
        and old.type == "file"
        and old.error is None
        and (rules.ignore_inode or old.orig_inode == node.orig_inode)
        and (rules.ignore_ctime or old.orig_ctime_ns == node.orig_ctime_ns)
        and old.size == st.st_size
        and old.mtime_ns == st.st_mtime_ns
    )


def all_present(store: BlobStore, blob_ids: Collection[bytes]) -> bool:
    try:
        # each id once: a sparse file repeats its zero blobs thousands of times (most files are
        # one blob: no set)
        unique = blob_ids if len(blob_ids) <= 1 or isinstance(blob_ids, set) else set(blob_ids)
        return store.has_blobs(unique)
    except (RepositoryError, NotFoundError):
        return False


def reuse(stats: WalkStats, files: list[tuple[Node, Node]]) -> None:
    """Give each file (node, its node in the parent snapshot) the content it had, and count
    them: the progress counters' lock taken once for a directory's files, not per file."""
    size = 0
    for node, old in files:
        node.content = list(old.content)
        node.sparse = old.sparse or node.sparse
        size += node.size
    stats.files_unmodified += len(files)
    with stats.lock:
        stats.files_done += len(files)
        stats.bytes_done += size
