"""A backup walk's finished directories, each written as a TREE blob once its files are stored.

The walk finishes a directory when it has visited every entry (post-order: its subdirectories
first); its files may still be read. Trees are written in the order the walk finished them, and out
of it once many wait behind one that is not done (`FinishedDirs._sweep`): a directory's nodes are
held only until its own files are stored. A directory whose nodes come out exactly as the parent
snapshot's tree of it is that tree again: its id is taken over, not encoded and hashed anew (a
tenth of a no-change backup's walk), as long as that tree is still stored intact.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from shadowvault.archive.deep_paths import Anchors
from shadowvault.archive.file_reader import FileReader, PendingContent
from shadowvault.archive.item_report import ItemReport, dir_action
from shadowvault.archive.small_files import FileError
from shadowvault.archive.store import BlobStore
from shadowvault.archive.walk_stats import WalkStats
from shadowvault.repo.tree import Node, Tree

SWEEP_AFTER = 64  # finished directories queued behind one still waiting before any is written out of order


class ParentEntries(dict[bytes, Node]):
    """A directory's entries in the parent snapshot, by name. `tree_id` is the tree they were read
    from when they are its nodes exactly (in order, no name twice): a directory whose nodes come
    out equal to them is that tree."""

    tree_id: bytes | None = None


@dataclass
class DirJob:
    """A directory being archived: its nodes, and what they still wait for."""

    nodes: list[Node] = field(default_factory=list)
    # files being read: (node, pending content, path, "new" or "modified" for `backup -vv`)
    files: list[tuple[Node, PendingContent, str, str]] = field(default_factory=list)
    # files found unchanged whose blobs the index is asked about once for the whole directory:
    # (node, its old node, the path it is read at, its original path)
    unchanged: list[tuple[Node, Node, bytes, bytes]] = field(default_factory=list)
    subdirs: list[tuple[Node, DirJob]] = field(default_factory=list)
    tree_id: bytes | None = None
    # the parent snapshot's tree of this directory and its nodes, while it may turn out unchanged
    parent_tree: bytes | None = None
    parent_nodes: list[Node] | None = None
    error: str | None = None  # why the directory could not be listed
    anchor: int | None = None  # the directory's descriptor, when entries below it are reached through it
    # for `backup -vv` (set only with a listener): the directory's path, whether the parent snapshot
    # had it, and its tree there
    path: str | None = None
    existed: bool = False
    old_tree: bytes | None = None

    def ready(self) -> bool:
        return all(fut.done() for _, fut, _, _ in self.files)

    def compare_with(self, parent: ParentEntries) -> None:
        """Keep the parent snapshot's tree to compare with when written: only for a directory whose
        files are all taken over. Never with a file being read: its node may be the parent tree's
        own node object (`parent_reuse.taken_over`, then read again for a lost blob), which the
        comparison would find equal to itself whatever content the read gives it."""
        if parent.tree_id is not None and not self.files and self.error is None:
            self.parent_tree, self.parent_nodes = parent.tree_id, list(parent.values())

    def unchanged_tree(self, store: BlobStore) -> bytes | None:
        """The parent snapshot's tree id when this directory's nodes are its nodes and it is stored
        intact (a tree found damaged is written anew, as `save_tree` would)."""
        tree_id, nodes = self.parent_tree, self.parent_nodes
        self.parent_tree = self.parent_nodes = None
        if tree_id is not None and self.nodes == nodes and store.has_blobs((tree_id,)):
            return tree_id
        return None


class FinishedDirs:
    """The directories the walk has finished, queued until their TREE blobs are written (main
    thread only)."""

    def __init__(
        self,
        store: BlobStore,
        reader: FileReader,
        stats: WalkStats,
        anchors: Anchors,
        report: ItemReport | None = None,
    ) -> None:
        self.store = store
        self.report = report  # told of each file stored and each tree written (`backup -vv`)
        self.reader = reader
        self.stats = stats
        self.anchors = anchors  # a written directory's descriptor is released
        self._finished: collections.deque[DirJob] = collections.deque()
        self._sweep_at = SWEEP_AFTER  # queued directories that make `drain` look past the first

    def add(self, job: DirJob) -> None:
        """Every entry of the directory was visited: queue it, and write what is done."""
        self._finished.append(job)
        self.drain(block=False)

    def drain(self, *, block: bool) -> None:
        """Write the TREE blobs of finished directories whose files are all done, in walk order,
        and out of it once many wait behind one that is not done (`_sweep`)."""
        if block:
            self.reader.flush()  # the small files still gathered: their batch is waited for below
        while self._finished and (block or self._finished[0].ready()):
            self._write_tree(self._finished.popleft())
        if len(self._finished) >= self._sweep_at:
            self._sweep()
            self._sweep_at = max(SWEEP_AFTER, 2 * len(self._finished))

    def _sweep(self) -> None:
        """Write every waiting directory that is done and whose subdirectories are written, keeping
        the others in walk order. A directory still reading its files (large ones, changed in an
        incremental backup) otherwise held every directory walked after it, nodes and all: a 5 %
        change of 100k files grew the backup's memory by ~100 MiB while its large files were read.
        The queue is in post-order (subdirectories first), so one pass writes nested ones too; a
        sweep when the queue has doubled since the last costs O(1) per directory."""
        waiting: collections.deque[DirJob] = collections.deque()
        for job in self._finished:
            if job.ready() and all(sub.tree_id is not None for _, sub in job.subdirs):
                self._write_tree(job)
            else:
                waiting.append(job)
        self._finished = waiting

    def _write_tree(self, job: DirJob) -> None:
        report = self.report
        for node, fut, path, action in job.files:
            try:
                stored = fut.result()
            except FileError as err:  # nothing of it is stored: its size says so
                with self.stats.lock:
                    self.stats.bytes_total -= node.size
                node.content, node.size = [], 0
                node.error = str(err)
                self.stats.error(path, str(err))
                continue
            node.content = stored.blob_ids
            if stored.size != node.size:
                with self.stats.lock:
                    self.stats.bytes_total += stored.size - node.size
                node.size = stored.size
            if stored.changed:
                self.stats.warn(path, f"changed while it was read; stored as read ({stored.size} bytes)")
            if report is not None:
                report(action, path, node.size)
        for node, sub in job.subdirs:
            node.subtree = sub.tree_id
        job.tree_id = job.unchanged_tree(self.store) or self.store.save_tree(Tree(nodes=job.nodes))
        if report is not None and job.path is not None:
            report(dir_action(job.existed, job.old_tree, job.tree_id), job.path.rstrip("/") + "/", None)
        job.nodes, job.files, job.subdirs = [], [], []
        if job.anchor is not None:  # every entry below it is done: nothing reaches through it any more
            self.anchors.release(job.anchor)
            job.anchor = None
