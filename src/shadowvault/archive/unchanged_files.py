"""The parent snapshot's side of an incremental walk: each directory's entries there, and its files
found unchanged, whose content is taken over once the index says every blob of theirs is stored.

A directory's unchanged files are settled together when the walk has visited all of it: the index
is asked once for all their blobs (~1/4 of a no-change backup's walk went to asking it file by
file), and a file with a blob that is not stored (lost, or found damaged) is read again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from shadowvault.archive.file_reader import PendingContent
from shadowvault.archive.finished_dirs import DirJob, ParentEntries
from shadowvault.archive.item_report import UNCHANGED, ItemReport
from shadowvault.archive.parent_reuse import all_present, reuse
from shadowvault.archive.store import BlobStore
from shadowvault.archive.tree_paths import text
from shadowvault.archive.walk_stats import WalkStats
from shadowvault.errors import NotFoundError, RepositoryError
from shadowvault.repo.tree import Node

log = logging.getLogger(__name__)

# reads a file again into its directory's job: (node, its parent node, where it is read, its path)
ReadAgain = Callable[[Node, Node, bytes, bytes, DirJob], PendingContent]


class UnchangedFiles:
    """The parent snapshot's entries and the unchanged files of the directories being walked."""

    def __init__(
        self, store: BlobStore, stats: WalkStats, report: ItemReport | None, read: ReadAgain
    ) -> None:
        self.store = store
        self.stats = stats
        self.report = report  # told of each file found unchanged (`backup -vv`)
        self._read = read

    def entries(self, tree_id: bytes | None) -> ParentEntries:
        """The parent snapshot's entries of a directory, by name (empty when unknown or unreadable)."""
        children = ParentEntries()
        if not tree_id:
            return children
        try:
            nodes = self.store.load_tree(tree_id).nodes
        except (RepositoryError, NotFoundError) as err:
            log.warning("parent snapshot tree unreadable, files will be read again: %s", err)
            return children
        children.update((node.name, node) for node in nodes)
        if len(children) == len(nodes):
            children.tree_id = tree_id
        return children

    def take_over(self, node: Node, old: Node, access: bytes, orig: bytes, job: DirJob) -> None:
        """Record a file whose parent-snapshot node is still exactly its own
        (`parent_reuse.taken_over`): its blobs are looked up with its directory's (`settle`)."""
        job.nodes.append(node)
        stats = self.stats
        stats.current_path = orig
        if stats.cancellation is not None:
            stats.cancellation.check()
        stats.bytes_total += node.size
        job.unchanged.append((node, old, access, orig))

    def settle(self, job: DirJob) -> None:
        """Reuse the content of the directory's unchanged files whose blobs are all stored; read
        the others again."""
        waiting, job.unchanged = job.unchanged, []
        if not waiting:
            return
        report = self.report
        if len(waiting) > 1 and all_present(self.store, {b for _, old, _, _ in waiting for b in old.content}):
            reuse(self.stats, [(node, old) for node, old, _, _ in waiting])
            if report is not None:
                for node, _, _, orig in waiting:
                    report(UNCHANGED, text(orig), node.size)
            return
        for node, old, access, orig in waiting:
            if all_present(self.store, old.content):
                reuse(self.stats, [(node, old)])
                if report is not None:
                    report(UNCHANGED, text(orig), node.size)
            else:
                self._read(node, old, access, orig, job)
