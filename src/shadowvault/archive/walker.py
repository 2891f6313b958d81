"""Walk source trees into the repository: one TREE blob per directory, files cut into DATA blobs.

This (main) thread walks and lstat()s; files are read on threads of their own (`file_reader`). A
directory's TREE blob is written once all of its entries are done (post-order, in the order the
walk finished them). Paths deeper than PATH_MAX are reached through open directories
(`deep_paths`).

What cannot be read is in the snapshot: an entry that cannot be stat'ed, a directory that cannot be
listed, a file that cannot be read each get a Node with `error` (and no content), and the error is
reported. A file that changes while it is read is stored as read: its size is the number of bytes
stored, and a warning says it changed.
"""

from __future__ import annotations

import collections
import logging
import os
import stat
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TypeAlias

from shadowvault.archive import metadata
from shadowvault.archive.deep_paths import ANCHOR_AFTER, Anchors
from shadowvault.archive.exclude_rules import CACHEDIR_TAG, ExcludeRules
from shadowvault.archive.file_reader import FileError, FileReader, PendingContent
from shadowvault.archive.metadata_prefetch import MetadataPrefetch
from shadowvault.archive.patterns import PathFilter
from shadowvault.archive.small_files import os_reason
from shadowvault.archive.store import BlobStore, Chunker, chunker_for, single_chunk_limit
from shadowvault.archive.tree_paths import join, text
from shadowvault.archive.walk_stats import Source, WalkStats
from shadowvault.errors import NotFoundError, RepositoryError
from shadowvault.repo.chunk_windows import ChunkWindows
from shadowvault.repo.tree import Node, Tree

__all__ = ["ANCHOR_AFTER", "Archiver", "Source", "WalkStats"]

log = logging.getLogger(__name__)

SWEEP_AFTER = 64  # finished directories queued behind one still waiting before any is written out of order

# the paths named for a backup, as a tree of names: a leaf is the Source read there
Hierarchy: TypeAlias = "dict[bytes, Source | Hierarchy]"


@dataclass
class _DirJob:
    """A directory being archived: its nodes, and what they still wait for."""

    nodes: list[Node] = field(default_factory=list)
    files: list[tuple[Node, PendingContent, str]] = field(default_factory=list)
    # files found unchanged whose blobs the index is asked about once for the whole directory:
    # (node, its old node, the path it is read at, its original path)
    unchanged: list[tuple[Node, Node, bytes, bytes]] = field(default_factory=list)
    subdirs: list[tuple[Node, _DirJob]] = field(default_factory=list)
    tree_id: bytes | None = None
    error: str | None = None  # why the directory could not be listed
    anchor: int | None = None  # the directory's descriptor, when entries below it are reached through it

    def ready(self) -> bool:
        return all(fut.done() for _, fut, _ in self.files)


def _listed_type(entry: os.DirEntry[bytes]) -> str:
    """The type a directory listing gives an entry (no stat needed); "file" when it does not say."""
    try:
        if entry.is_symlink():
            return "symlink"
        if entry.is_dir(follow_symlinks=False):
            return "dir"
    except OSError:
        pass
    return "file"


def _same_inode(old: Node | None, st: os.stat_result, copied: bool) -> Node | None:
    """The parent snapshot's node when it is this very inode, unchanged since (same inode number,
    same ctime, read whole; `metadata.capture` checks the type): its extended attributes need not
    be read again. Never for a copy (a reflink copy has an inode and ctime of its own)."""
    if (
        old is None
        or copied
        or old.error is not None
        or old.inode != st.st_ino
        or old.ctime_ns != st.st_ctime_ns
    ):
        return None
    return old


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
    ):
        self.store = store
        # the directories above the sources (/, /home, ...) are read below this root (components
        # backing up another machine's tree); "/" for the running system
        self.virtual_root = virtual_root.rstrip(b"/")
        self.filter = path_filter or PathFilter()
        self.rules = rules or ExcludeRules()  # size limit, cache directories (archive/exclude_rules.py)
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
        self._finished: collections.deque[_DirJob] = collections.deque()
        self._sweep_at = SWEEP_AFTER  # queued directories that make `_drain` look past the first
        self._links: dict[tuple[int, int], tuple[Node, PendingContent | None]] = {}
        self._anchors = Anchors()

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
        prefetch = MetadataPrefetch(
            [s.read_path for s in (whole[:1] or sources)] + [g.read_path for g in self.grafts.values()]
        )
        try:
            if whole:
                root = self._walk_dir(
                    whole[0].read_path, b"/", self._children(parent_tree), self._is_copy(whole[0])
                )
            else:
                root = self._virtual_dir(b"/", hierarchy, self._children(parent_tree))
            self._drain(block=True)
        except BaseException:
            # interrupted or failed: drop the queued work instead of reading every queued file first
            self.reader.shutdown(cancel=True)
            raise
        finally:
            prefetch.stop()
            self.reader.shutdown()
            self._anchors.close_all()
        assert root.tree_id is not None
        return root.tree_id

    # -- walking (main thread) ---------------------------------------------------------------------

    def _children(self, tree_id: bytes | None) -> dict[bytes, Node]:
        """The parent snapshot's entries of a directory, by name (empty when unknown or unreadable)."""
        if not tree_id:
            return {}
        try:
            return {node.name: node for node in self.store.load_tree(tree_id).nodes}
        except (RepositoryError, NotFoundError) as err:
            log.warning("parent snapshot tree unreadable, files will be read again: %s", err)
            return {}

    def _virtual_dir(self, orig: bytes, hierarchy: Hierarchy, parent: dict[bytes, Node]) -> _DirJob:
        """A directory above the sources (/, /home, ...): live metadata, only the named children."""
        job = _DirJob()
        for name in sorted(hierarchy):
            child = hierarchy[name]
            path = join(orig, name)
            old = parent.get(name)
            if isinstance(child, Source):
                try:
                    st = os.lstat(child.read_path)
                except OSError as err:
                    self._error(path, err)
                    continue
                self._entry(child.read_path, path, name, st, old, job, self._is_copy(child))
                continue
            try:
                where = self.virtual_root + path if self.virtual_root else path
                node = metadata.capture(where, os.lstat(where), name)
            except OSError as err:
                self._error(path, err)
                continue
            old_children = self._children(old.subtree) if old and old.type == "dir" else {}
            sub = self._virtual_dir(path, child, old_children)
            job.nodes.append(node)
            job.subdirs.append((node, sub))
        self._finish(job)
        return job

    @staticmethod
    def _is_copy(source: Source) -> bool:
        """A source read from somewhere else whose root has another inode than the original's."""
        if source.copied is not None:
            return source.copied
        if source.read_path == source.orig_path:
            return False
        try:
            return os.lstat(source.read_path).st_ino != os.lstat(source.orig_path).st_ino
        except OSError:
            return False

    def _walk_dir(
        self,
        read_path: bytes,
        orig: bytes,
        parent: dict[bytes, Node],
        copied: bool = False,
        access: bytes | None = None,
    ) -> _DirJob:
        """Archive the directory read at `read_path` (reached through `access`, when given)."""
        job = _DirJob()
        access = read_path if access is None else access
        try:
            access, job.anchor = self._anchors.reach(access)
            with os.scandir(access) as it:
                # the listing's type (d_type, no stat) names an entry that cannot be stat'ed
                listed = sorted((entry.name, _listed_type(entry)) for entry in it)
        except OSError as err:
            job.error = f"directory not listed: {os_reason(err)}"
            self._error(orig, job.error)
            listed = []
        if self.rules.cache_dir(access, [name for name, _ in listed]):
            left_out = len(listed) - 1
            listed = [(name, kind) for name, kind in listed if name == CACHEDIR_TAG]
            entries = "1 entry" if left_out == 1 else f"{left_out} entries"
            self.stats.skip(orig, "cache_dir", f"cache directory (CACHEDIR.TAG): {entries} left out")
        grafted = self._graft_names.get(orig, set()) - {name for name, _ in listed}
        if grafted:  # a mount point the shadow does not show (a copy leaves mounts out)
            listed = sorted([*listed, *((name, "dir") for name in grafted)])
        # join() once per directory, not per entry: the prefixes its names are appended to
        orig_prefix, read_prefix = join(orig, b""), join(read_path, b"")
        access_prefix = read_prefix if access is read_path else join(access, b"")
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
                    self._error(child_orig, os_reason(err))
                    continue
                self._entry(
                    graft.read_path, child_orig, name, st, parent.get(name), job, self._is_copy(graft)
                )
                continue
            child_read = read_prefix + name
            child_access = child_read if access is read_path else access_prefix + name
            try:
                st = os.lstat(child_access)
            except FileNotFoundError:
                self._warn(child_orig, "vanished while the directory was read; not in the snapshot")
                continue
            except OSError as err:
                job.nodes.append(Node(name=name, type=kind, error=os_reason(err)))
                self._error(child_orig, os_reason(err))
                continue
            self._entry(child_read, child_orig, name, st, parent.get(name), job, copied, child_access)
        self._finish(job)
        return job

    def _entry(
        self,
        read_path: bytes,
        orig: bytes,
        name: bytes,
        st: os.stat_result,
        old: Node | None,
        job: _DirJob,
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
            node = metadata.capture(access, st, name, _same_inode(old, st, copied))
        except OSError as err:
            job.nodes.append(Node(name=name, type=metadata.node_type(st.st_mode), error=os_reason(err)))
            self._error(orig, os_reason(err))
            return
        job.nodes.append(node)
        stats = self.stats  # the walk's counters have one writer, this thread: no lock needed
        stats.current_path = orig
        if stats.cancellation is not None:
            stats.cancellation.check()
        if node.type == "dir":
            stats.dirs += 1
            if orig in self.not_descended:  # a mount that is not read: the directory, empty
                sub = _DirJob()
                self._finish(sub)
                job.subdirs.append((node, sub))
                return
            sub_parent = self._children(old.subtree) if old is not None and old.type == "dir" else {}
            sub = self._walk_dir(read_path, orig, sub_parent, copied, access)
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
            else:  # its first name is being read: this name is as new (or changed) as its own entry
                job.files.append((node, fut, text(orig)))
                if old is None:
                    stats.files_new += 1
                else:
                    stats.files_changed += 1
            return
        if copied:
            self._record_original(orig, st, node)
        if old is not None and self._unchanged(old, st, node, copied):
            if st.st_nlink == 1:  # its blobs are looked up with its directory's (`_reuse_unchanged`)
                job.unchanged.append((node, old, access, orig))
                return
            if self._all_present(old.content):  # a later name of it must know now
                self._reuse([(node, old)])
                self._links[link_key] = (node, None)
                return
        fut = self._read(node, old, access, orig, job)
        if st.st_nlink > 1:
            self._links[link_key] = (node, fut)

    def _reuse_unchanged(self, job: _DirJob) -> None:
        """Reuse the content of the directory's unchanged files whose blobs are all stored (the
        index asked once for all of them: ~1/4 of a no-change backup's walk went to asking it file
        by file); a file with a blob that is not (lost, or found damaged) is read again."""
        waiting, job.unchanged = job.unchanged, []
        if not waiting:
            return
        if len(waiting) > 1 and self._all_present({b for _, old, _, _ in waiting for b in old.content}):
            self._reuse([(node, old) for node, old, _, _ in waiting])
            return
        for node, old, access, orig in waiting:
            if self._all_present(old.content):
                self._reuse([(node, old)])
            else:
                self._read(node, old, access, orig, job)

    def _reuse(self, files: list[tuple[Node, Node]]) -> None:
        """Give each file (node, its node in the parent snapshot) the content it had, and count
        them: the progress counters' lock taken once for a directory's files, not per file."""
        size = 0
        for node, old in files:
            node.content = list(old.content)
            node.sparse = old.sparse or node.sparse
            size += node.size
        stats = self.stats
        stats.files_unmodified += len(files)
        with stats.lock:
            stats.files_done += len(files)
            stats.bytes_done += size

    def _read(self, node: Node, old: Node | None, access: bytes, orig: bytes, job: _DirJob) -> PendingContent:
        """Read the file's content (new, or changed since `old`); its pending content."""
        if old is None:
            self.stats.files_new += 1
        else:
            self.stats.files_changed += 1
        fut = self.reader.submit(access, node, orig)
        job.files.append((node, fut, text(orig)))
        return fut

    def _record_original(self, orig: bytes, st: os.stat_result, node: Node) -> None:
        """Remember the live original's identity when it provably has the copy's content."""
        try:
            live = os.lstat(orig)
        except OSError:
            return
        if (
            stat.S_ISREG(live.st_mode)
            and live.st_size == st.st_size
            and live.st_mtime_ns == st.st_mtime_ns
            and live.st_ctime_ns < self.copy_cutoff_ns
        ):
            node.orig_inode, node.orig_ctime_ns = live.st_ino, live.st_ctime_ns

    @staticmethod
    def _unchanged(old: Node, st: os.stat_result, node: Node, copied: bool) -> bool:
        """The incremental test, on the copy's stat or, for a copy, on the original's identity."""
        if not copied:
            return metadata.same_content_metadata(old, st)
        return (
            node.orig_inode != 0
            and old.type == "file"
            and old.error is None
            and old.orig_inode == node.orig_inode
            and old.orig_ctime_ns == node.orig_ctime_ns
            and old.size == st.st_size
            and old.mtime_ns == st.st_mtime_ns
        )

    def _all_present(self, blob_ids: Collection[bytes]) -> bool:
        try:
            # each id once: a sparse file repeats its zero blobs thousands of times (most files are
            # one blob: no set)
            unique = blob_ids if len(blob_ids) <= 1 or isinstance(blob_ids, set) else set(blob_ids)
            return self.store.has_blobs(unique)
        except (RepositoryError, NotFoundError):
            return False

    def _error(self, path: bytes | str, err: BaseException | str) -> None:
        if isinstance(err, str):
            reason = err
        elif isinstance(err, OSError) and err.strerror:
            reason = err.strerror
        else:
            reason = str(err)
        shown = path if isinstance(path, str) else text(path)
        log.debug("%s: %s", shown, reason)  # in the result: the caller says it
        with self.stats.lock:
            self.stats.errors.append((shown, reason))

    def _warn(self, path: bytes | str, reason: str) -> None:
        shown = path if isinstance(path, str) else text(path)
        log.debug("%s: %s", shown, reason)
        with self.stats.lock:
            self.stats.warnings.append((shown, reason))

    # -- directory completion ----------------------------------------------------------------------

    def _finish(self, job: _DirJob) -> None:
        """Every entry of the directory was visited: settle its unchanged files and queue it."""
        self._reuse_unchanged(job)
        self._finished.append(job)
        self._drain(block=False)

    def _drain(self, *, block: bool) -> None:
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
        waiting: collections.deque[_DirJob] = collections.deque()
        for job in self._finished:
            if job.ready() and all(sub.tree_id is not None for _, sub in job.subdirs):
                self._write_tree(job)
            else:
                waiting.append(job)
        self._finished = waiting

    def _write_tree(self, job: _DirJob) -> None:
        for node, fut, path in job.files:
            try:
                stored = fut.result()
            except FileError as err:  # nothing of it is stored: its size says so
                with self.stats.lock:
                    self.stats.bytes_total -= node.size
                node.content, node.size = [], 0
                node.error = str(err)
                self._error(path, str(err))
                continue
            node.content = stored.blob_ids
            if stored.size != node.size:
                with self.stats.lock:
                    self.stats.bytes_total += stored.size - node.size
                node.size = stored.size
            if stored.changed:
                self._warn(path, f"changed while it was read; stored as read ({stored.size} bytes)")
        for node, sub in job.subdirs:
            node.subtree = sub.tree_id
        job.tree_id = self.store.save_tree(Tree(nodes=job.nodes))
        job.nodes, job.files, job.subdirs = [], [], []
        if job.anchor is not None:  # every entry below it is done: nothing reaches through it any more
            self._anchors.release(job.anchor)
            job.anchor = None
