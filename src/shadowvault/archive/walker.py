"""Walk source trees into the repository: one TREE blob per directory, files cut into DATA blobs.

This (main) thread walks and lstat()s; files are read on threads of their own (`file_reader`), or
taken over from the parent snapshot unread (`parent_reuse`). A directory's TREE blob is written once
all of its entries are done (`finished_dirs`: post-order, in the order the walk finished them).
Paths deeper than PATH_MAX are reached through open directories (`deep_paths`).

What cannot be read is in the snapshot: an entry that cannot be stat'ed, a directory that cannot be
listed, a file that cannot be read each get a Node with `error` (and no content), and the error is
reported. A file that changes while it is read is stored as read: its size is the number of bytes
stored, and a warning says it changed.
"""

from __future__ import annotations

import os
import time
from typing import TypeAlias

from shadowvault.archive import metadata
from shadowvault.archive.deep_paths import ANCHOR_AFTER, Anchors
from shadowvault.archive.entry_stat import EntryStat
from shadowvault.archive.exclude_rules import ExcludeRules
from shadowvault.archive.file_reader import FileReader, PendingContent
from shadowvault.archive.finished_dirs import DirJob, FinishedDirs, ParentEntries
from shadowvault.archive.item_report import MODIFIED, NEW, UNCHANGED, ItemReport
from shadowvault.archive.live_devices import live_devices
from shadowvault.archive.metadata_prefetch import Listing, MetadataPrefetch
from shadowvault.archive.parent_reuse import (
    ChangeRules,
    all_present,
    is_copy,
    record_original,
    reuse,
    same_inode,
    taken_over,
    unchanged,
)
from shadowvault.archive.patterns import PathFilter
from shadowvault.archive.prefetch_walk import listed_kind
from shadowvault.archive.small_files import os_reason
from shadowvault.archive.store import BlobStore, Chunker, chunker_for, single_chunk_limit
from shadowvault.archive.tree_paths import join, text
from shadowvault.archive.unchanged_files import UnchangedFiles
from shadowvault.archive.walk_stats import Source, WalkStats
from shadowvault.cancellation import check
from shadowvault.repo.chunk_windows import ChunkWindows
from shadowvault.repo.tree import Node

__all__ = ["ANCHOR_AFTER", "Archiver", "Source", "WalkStats"]


# the paths named for a backup, as a tree of names: a leaf is the Source read there
Hierarchy: TypeAlias = "dict[bytes, Source | Hierarchy]"


class Archiver:
    """Writes sources into a store as trees and data blobs; reuses a parent snapshot's unchanged files."""

    def __init__(
        self,
        store: BlobStore,
        *,
        chunker: Chunker | None = None,
        path_filter: PathFilter | None = None,
        skip_paths: set[bytes] | None = None,
        grafts: dict[bytes, Source] | None = None,
        not_descended: set[bytes] | None = None,
        read_workers: int = 4,
        blob_workers: int | None = None,
        max_files: int = 64,
        max_chunks: int | None = None,
        seal_processes: int | None = None,
        stats: WalkStats | None = None,
        copy_started: float | None = None,
        virtual_root: bytes = b"/",
        rules: ExcludeRules | None = None,
        change_rules: ChangeRules | None = None,
        with_atime: bool = False,
        report: ItemReport | None = None,
    ):
        self.store = store
        self.report = report  # told of each entry settled (`backup -vv`): archive/item_report.py
        # the directories above the sources (/, /home, ...) are read below this root (components
        # backing up another machine's tree); "/" for the running system
        self.virtual_root = virtual_root.rstrip(b"/")
        self.filter = path_filter or PathFilter()
        self.rules = rules or ExcludeRules()  # size limit, tagged directories (archive/exclude_rules.py)
        self.change_rules = change_rules or ChangeRules()  # --ignore-inode, --ignore-ctime
        self.with_atime = with_atime  # record atimes (else the mtime: metadata.capture)
        # files whose parent-snapshot node is still exactly theirs take it over (`taken_over`)
        self._takes_over = not with_atime and self.change_rules == ChangeRules()
        self.skip_paths = {p.rstrip(b"/") for p in (skip_paths or set())}
        # original path -> where it is read instead (a mount below a source, read through its own shadow)
        self.grafts = dict(grafts or {})
        self._graft_names: dict[bytes, set[bytes]] = {}  # directory -> names grafted into it
        for path in self.grafts:
            parent, _, name = path.rpartition(b"/")
            self._graft_names.setdefault(parent or b"/", set()).add(name)
        self.not_descended = set(not_descended or ())  # directories recorded without their contents
        self.stats = stats or WalkStats()
        self.reader = FileReader(
            store,
            chunker or chunker_for(store),
            self.stats,
            single_chunk=single_chunk_limit(store) if chunker is None else 0,
            read_workers=read_workers,
            blob_workers=blob_workers,
            max_files=max_files,
            max_chunks=max_chunks,
            seal_processes=seal_processes,
            windows=ChunkWindows(store.chunker.params) if chunker is None else None,
        )
        # when the copies were started: a live file whose ctime is older is the same in the copy
        # (one second of margin for coarse file-system clocks)
        self.copy_cutoff_ns = int(((copy_started or time.time()) - 1.0) * 1e9)
        self._links: dict[tuple[int, int], tuple[Node, PendingContent | None]] = {}
        self._devices: dict[int, int] = {}  # a shadow's st_dev -> its live volume's (`live_devices`)
        self._anchors = Anchors()
        self._prefetch: MetadataPrefetch | None = None  # the walk's, while it runs
        self.finished = FinishedDirs(store, self.reader, self.stats, self._anchors, report)
        self.unchanged = UnchangedFiles(store, self.stats, report, self._read)

    # -- entry point -----------------------------------------------------------------------------

    def archive(self, sources: list[Source], parent_tree: bytes | None = None) -> bytes:
        """Archive every source under its original absolute path; returns the root TREE blob id."""
        hierarchy: Hierarchy = {}
        whole = [s for s in sources if not s.orig_path.strip(b"/")]  # `/` covers every other source
        for source in [] if whole else sources:
            parts = [p for p in source.orig_path.split(b"/") if p]
            level = hierarchy
            for part in parts[:-1]:
                nxt = level.setdefault(part, {})
                if isinstance(nxt, Source):  # a parent of this path is itself a source: it covers it
                    break
                level = nxt
            else:
                level[parts[-1]] = source
        above = self.virtual_root
        self._devices = live_devices(
            (s.read_path, above + s.orig_path) for s in [*(whole[:1] or sources), *self.grafts.values()]
        )
        self._prefetch = prefetch = MetadataPrefetch(
            [s.read_path for s in (whole[:1] or sources)] + [g.read_path for g in self.grafts.values()]
        )
        try:
            if whole:
                root = self._walk_dir(
                    whole[0].read_path, b"/", self.unchanged.entries(parent_tree), is_copy(whole[0])
                )
            else:
                root = self._virtual_dir(b"/", hierarchy, self.unchanged.entries(parent_tree))
            self.finished.drain(block=True)
            check(self.stats.cancellation)  # cancelled while the last files were read: no snapshot
        except BaseException:
            # interrupted or failed: drop the queued work instead of reading every queued file first
            self.reader.shutdown(cancel=True)
            raise
        finally:
            prefetch.stop()
            self._prefetch = None
            self.reader.shutdown()
            self._anchors.close_all()
        assert root.tree_id is not None
        return root.tree_id

    # -- walking (main thread) ---------------------------------------------------------------------

    def _prefetched(self, directory: bytes) -> Listing | None:
        """The metadata prefetch's listing of `directory`, when it has it already."""
        return self._prefetch.listing(directory) if self._prefetch is not None else None

    def _virtual_dir(
        self, orig: bytes, hierarchy: Hierarchy, parent: ParentEntries, old: Node | None = None
    ) -> DirJob:
        """A directory above the sources (/, /home, ...): live metadata, only the named children."""
        job = self._dir_job(orig, old)
        for name in sorted(hierarchy):
            child = hierarchy[name]
            path = join(orig, name)
            old = parent.get(name)
            if isinstance(child, Source):
                try:
                    st = os.lstat(child.read_path)
                except OSError as err:
                    self.stats.error(path, err)
                    continue
                self._entry(child.read_path, path, name, st, old, job, is_copy(child))
                continue
            try:
                where = self.virtual_root + path if self.virtual_root else path
                node = metadata.capture(where, os.lstat(where), name, with_atime=self.with_atime)
            except OSError as err:
                self.stats.error(path, err)
                continue
            old_children = self.unchanged.entries(old.subtree if old and old.type == "dir" else None)
            sub = self._virtual_dir(path, child, old_children, old)
            job.nodes.append(node)
            job.subdirs.append((node, sub))
        self._finish(job, parent)
        return job

    def _walk_dir(
        self,
        read_path: bytes,
        orig: bytes,
        parent: ParentEntries,
        copied: bool = False,
        access: bytes | None = None,
        old: Node | None = None,
    ) -> DirJob:
        """Archive the directory read at `read_path` (reached through `access`, when given)."""
        job = self._dir_job(orig, old)
        access = read_path if access is None else access
        prefetched = self._prefetched(access) if access == read_path else None
        try:
            access, job.anchor = self._anchors.reach(access)
            if prefetched is not None and job.anchor is None:
                listed = [(name, kind) for name, kind, _ in prefetched]
            else:
                prefetched = None
                with os.scandir(access) as it:
                    # the listing's type (d_type, no stat) names an entry that cannot be stat'ed
                    listed = sorted((entry.name, listed_kind(entry)) for entry in it)
        except OSError as err:
            job.error = f"directory not listed: {os_reason(err)}"
            self.stats.error(orig, job.error)
            listed = []
        found = {name: st for name, _, st in prefetched if st is not None} if prefetched else {}
        tagged = self.rules.tagged(access, [name for name, _ in listed]) if self.rules.tag_rules else []
        if tagged:  # only the tags are kept (each rule's own: a restore shows why the rest is not there)
            tags = {rule.name for rule in tagged}
            left_out = len(listed) - len([name for name, _ in listed if name in tags])
            listed = [(name, kind) for name, kind in listed if name in tags]
            self.stats.skip(orig, tagged[0].kind, tagged[0].reason(left_out))
        grafted = self._graft_names.get(orig, set()) - {name for name, _ in listed}
        if grafted:  # a mount point the shadow does not show (a copy leaves mounts out)
            listed = sorted([*listed, *((name, "dir") for name in grafted)])
        # join() once per directory, not per entry: the prefixes its names are appended to
        orig_prefix, read_prefix = join(orig, b""), join(read_path, b"")
        access_prefix = read_prefix if access is read_path else join(access, b"")
        takes_over, limit = self._takes_over and not copied, self.rules.larger_than
        st: EntryStat
        for name, kind in listed:
            child_orig = orig_prefix + name
            if child_orig in self.skip_paths:
                continue
            if self.filter.excluded(child_orig):
                self.stats.skip(child_orig, "excluded", "matches an exclude pattern")
                continue
            graft = self.grafts.get(child_orig)
            if graft is not None:  # a mount below: read where its own shadow (or the live mount) is
                try:
                    st = os.lstat(graft.read_path)
                except OSError as err:
                    job.nodes.append(Node(name=name, type="dir", error=os_reason(err)))
                    self.stats.error(child_orig, os_reason(err))
                    continue
                self._entry(graft.read_path, child_orig, name, st, parent.get(name), job, is_copy(graft))
                continue
            child_read = read_prefix + name
            child_access = child_read if access is read_path else access_prefix + name
            try:
                st = found.get(name) or os.lstat(child_access)
            except FileNotFoundError:
                self.stats.warn(child_orig, "vanished while the directory was read; not in the snapshot")
                continue
            except OSError as err:
                job.nodes.append(Node(name=name, type=kind, error=os_reason(err)))
                self.stats.error(child_orig, os_reason(err))
                continue
            old = parent.get(name)
            if (
                takes_over
                and old is not None
                and (limit is None or st.st_size <= limit)
                and (node := taken_over(old, st)) is not None
            ):
                self.unchanged.take_over(node, old, child_access, child_orig, job)
                continue
            self._entry(child_read, child_orig, name, st, old, job, copied, child_access)
        self._finish(job, parent)
        return job

    def _entry(
        self,
        read_path: bytes,
        orig: bytes,
        name: bytes,
        st: EntryStat,
        old: Node | None,
        job: DirJob,
        copied: bool = False,
        access: bytes | None = None,
    ) -> None:
        """Record one entry into `job`, reading or reusing its content, recursing into directories."""
        access = read_path if access is None else access
        too_large = self.rules.too_large(st)
        if too_large is not None:
            self.stats.skip(orig, "larger_than", too_large)
            return
        try:
            reused = same_inode(old, st, copied, self.change_rules)
            node = metadata.capture(access, st, name, reused, with_atime=self.with_atime)
        except OSError as err:
            job.nodes.append(Node(name=name, type=metadata.node_type(st.st_mode), error=os_reason(err)))
            self.stats.error(orig, os_reason(err))
            return
        if node.device:  # hard-linked: under its live volume's device (archive/live_devices.py)
            node.device = self._devices.get(node.device, node.device)
        job.nodes.append(node)
        stats = self.stats  # the walk's counters have one writer, this thread: no lock needed
        stats.current_path = orig
        if stats.cancellation is not None:
            stats.cancellation.check()
        if node.type == "dir":
            stats.dirs += 1
            if orig in self.not_descended:  # a mount that is not read: the directory, empty
                sub = DirJob()
                self._finish(sub)
                job.subdirs.append((node, sub))
                return
            old_tree = old.subtree if old is not None and old.type == "dir" else None
            sub_parent = self.unchanged.entries(old_tree)
            sub = self._walk_dir(read_path, orig, sub_parent, copied, access, old)
            node.error = sub.error
            job.subdirs.append((node, sub))
            return
        if node.type != "file":
            stats.others += 1
            return
        stats.bytes_total += node.size
        link_key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and link_key in self._links:
            first, fut = self._links[link_key]
            with stats.lock:  # nothing of this name is read
                stats.files_done += 1
                stats.bytes_done += node.size
            if fut is None:  # its first name was found unmodified: so is this one
                node.content, node.size = list(first.content), first.size
                stats.files_unmodified += 1
                if self.report is not None:
                    self.report(UNCHANGED, text(orig), node.size)
            else:  # its first name is being read: this name is as new (or changed) as its own entry
                job.files.append((node, fut, text(orig), NEW if old is None else MODIFIED))
                if old is None:
                    stats.files_new += 1
                else:
                    stats.files_changed += 1
            return
        if copied:
            record_original(orig, st, node, self.copy_cutoff_ns)
        if old is not None and unchanged(old, st, node, copied, self.change_rules):
            if st.st_nlink == 1:  # its blobs are looked up with its directory's (`UnchangedFiles.settle`)
                job.unchanged.append((node, old, access, orig))
                return
            if all_present(self.store, old.content):  # a later name of it must know now
                reuse(stats, [(node, old)])
                self._links[link_key] = (node, None)
                if self.report is not None:
                    self.report(UNCHANGED, text(orig), node.size)
                return
        fut = self._read(node, old, access, orig, job)
        if st.st_nlink > 1:
            self._links[link_key] = (node, fut)

    def _read(self, node: Node, old: Node | None, access: bytes, orig: bytes, job: DirJob) -> PendingContent:
        """Read the file's content (new, or changed since `old`); its pending content."""
        if old is None:
            self.stats.files_new += 1
        else:
            self.stats.files_changed += 1
        fut = self.reader.submit(access, node, orig)
        job.files.append((node, fut, text(orig), NEW if old is None else MODIFIED))
        return fut

    def _dir_job(self, orig: bytes, old: Node | None) -> DirJob:
        """A directory's job; with a listener (`backup -vv`), what it needs to say new, modified or
        unchanged when the tree is written (not for `/`, which restic does not list either)."""
        job = DirJob()
        if self.report is not None and orig != b"/":
            job.path = text(orig)
            job.existed = old is not None and old.type == "dir"
            job.old_tree = old.subtree if job.existed and old is not None else None
        return job

    def _finish(self, job: DirJob, parent: ParentEntries | None = None) -> None:
        """Every entry of the directory was visited: settle its unchanged files and queue it (with
        the parent snapshot's tree of it, to take over if it comes out the same)."""
        self.unchanged.settle(job)
        if parent is not None:
            job.compare_with(parent)
        self.finished.add(job)
