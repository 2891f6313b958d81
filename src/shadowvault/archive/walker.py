"""Walk source trees into the repository: one TREE blob per directory, files cut into DATA blobs.

The pipeline: this (main) thread walks and lstat()s; reader threads open files and cut them into
chunks; blob threads hash, compress, encrypt and pack the chunks (`save_blob`, C code that releases
the GIL, so two cores are used). Memory is bounded: at most `max_files` files and `max_chunks`
chunks are in flight, whatever the size of the files. A directory's TREE blob is written once all
of its entries are done (post-order, in the order the walk finished them).

Where each entry is read (`read_path`: a shadow) and what is recorded (`orig_path`: the original
path) are kept apart, so a backup of a shadow records the paths users know.

Paths past PATH_MAX: system calls get an access path, which is the read path itself until it grows
past `ANCHOR_AFTER` bytes; there the walk opens the directory and continues below
/proc/self/fd/N/..., so a tree of any depth is read whole. The directory's descriptor stays open
until its TREE blob is written (its files are read by then).

What cannot be read is in the snapshot: an entry that cannot be stat'ed, a directory that cannot be
listed, a file that cannot be read each get a Node with `error` (and no content), and the error is
reported. A file that changes while it is read is stored as read: its size is the number of bytes
stored, and a warning says it changed.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import stat
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from shadowvault.archive import metadata
from shadowvault.archive.patterns import PathFilter
from shadowvault.archive.store import BlobStore, Chunker, blob_kinds, chunker_for, single_chunk_limit
from shadowvault.errors import IntegrityError, NotFoundError, RepositoryError
from shadowvault.repo.tree import Node, Tree, decode_tree, encode_tree

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# an access path longer than this is re-anchored on an open directory: the path of any entry below it
# (plus a name of up to 255 bytes) stays under PATH_MAX (4096)
ANCHOR_AFTER = 3072


@dataclass
class Source:
    """One path to back up: where it is read, and the absolute path recorded for it."""

    orig_path: bytes
    read_path: bytes
    # the read path is a copy with inodes of its own (a reflink shadow, detected by the archiver when
    # not given): incremental matching then uses the live original's identity
    copied: bool | None = None


@dataclass
class WalkStats:
    """Counters a progress display can read at any time (updated under `lock`)."""

    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    dirs: int = 0
    others: int = 0
    bytes_total: int = 0  # size of every file in the snapshot
    bytes_read: int = 0  # bytes actually read from files (unmodified files are not read)
    blobs_saved: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): stored, but note it
    current_path: bytes = b""  # the entry being walked (set without the lock: one writer)
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def current(self) -> str:
        return text(self.current_path)

    @property
    def files(self) -> int:
        return self.files_new + self.files_changed + self.files_unmodified

    def as_dict(self) -> dict[str, Any]:
        return {
            "files_new": self.files_new,
            "files_changed": self.files_changed,
            "files_unmodified": self.files_unmodified,
            "dirs": self.dirs,
            "others": self.others,
            "bytes_total": self.bytes_total,
            "bytes_read": self.bytes_read,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
        }


class _FileError(Exception):
    """A file could not be read; the message is the reason shown to the user."""


@dataclass
class _Content:
    """What was stored of one file: its DATA blobs, their total length, whether it changed meanwhile."""

    blob_ids: list[bytes]
    size: int
    changed: bool = False


@dataclass
class _DirJob:
    """A directory being archived: its nodes, and what they still wait for."""

    nodes: list[Node] = field(default_factory=list)
    files: list[tuple[Node, Future[_Content], str]] = field(default_factory=list)
    subdirs: list[tuple[Node, _DirJob]] = field(default_factory=list)
    tree_id: bytes | None = None
    error: str | None = None  # why the directory could not be listed
    anchor: int | None = None  # the directory's descriptor, when entries below it are reached through it

    def ready(self) -> bool:
        return all(fut.done() for _, fut, _ in self.files)


def join(parent: bytes, name: bytes) -> bytes:
    return parent.rstrip(b"/") + b"/" + name


def text(path: bytes) -> str:
    """A path for people and documents: invalid UTF-8 bytes shown as \\xNN (encodable everywhere)."""
    return path.decode("utf-8", errors="backslashreplace")


def _reason(err: OSError) -> str:
    if err.errno == errno.EIO:
        return "input/output error while reading (damaged file or device)"
    return err.strerror or str(err)


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


class Archiver:
    """Writes sources into a store as trees and data blobs; reuses a parent snapshot's unchanged files."""

    def __init__(
        self,
        store: BlobStore,
        *,
        chunker: Chunker | None = None,
        path_filter: PathFilter | None = None,
        skip_paths: set[bytes] | None = None,
        read_workers: int = 4,
        blob_workers: int | None = None,
        max_files: int = 64,
        max_chunks: int | None = None,
        stats: WalkStats | None = None,
        copy_started: float | None = None,
        virtual_root: bytes = b"/",
    ):
        self.store = store
        # the directories above the sources (/, /home, ...) are read below this root (components
        # backing up another machine's tree); "/" for the running system
        self.virtual_root = virtual_root.rstrip(b"/")
        self.chunker = chunker or chunker_for(store)
        self.data_kind, self.tree_kind = blob_kinds(store)
        self.single_chunk = single_chunk_limit(store) if chunker is None else 0
        self.filter = path_filter or PathFilter()
        self.skip_paths = {p.rstrip(b"/") for p in (skip_paths or set())}
        workers = blob_workers or max(2, os.cpu_count() or 2)
        self.readers = ThreadPoolExecutor(read_workers, thread_name_prefix="sv-read")
        self.blobbers = ThreadPoolExecutor(workers, thread_name_prefix="sv-blob")
        self.file_slots = threading.BoundedSemaphore(max_files)
        self.chunk_slots = threading.BoundedSemaphore(max_chunks or 2 * workers + 2)
        self.large_file = threading.Lock()
        self.stats = stats or WalkStats()
        # when the copies were started: a live file whose ctime is older is the same in the copy
        # (one second of margin for coarse file-system clocks)
        self.copy_cutoff_ns = int(((copy_started or time.time()) - 1.0) * 1e9)
        self._finished: collections.deque[_DirJob] = collections.deque()
        self._links: dict[tuple[int, int], tuple[Node, Future[_Content] | None]] = {}
        self._anchors: set[int] = set()

    # -- entry point -----------------------------------------------------------------------------

    def archive(self, sources: list[Source], parent_tree: bytes | None = None) -> bytes:
        """Archive every source under its original absolute path; returns the root TREE blob id."""
        hierarchy: dict[bytes, Any] = {}
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
            self.readers.shutdown(wait=False, cancel_futures=True)
            self.blobbers.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            self.readers.shutdown(wait=True)
            self.blobbers.shutdown(wait=True)
            for fd in self._anchors:  # left open only when the walk was interrupted
                os.close(fd)
            self._anchors.clear()
        assert root.tree_id is not None
        return root.tree_id

    # -- walking (main thread) ---------------------------------------------------------------------

    def _children(self, tree_id: bytes | None) -> dict[bytes, Node]:
        """The parent snapshot's entries of a directory, by name (empty when unknown or unreadable)."""
        if not tree_id:
            return {}
        try:
            return {node.name: node for node in decode_tree(self.store.load_blob(tree_id)).nodes}
        except (RepositoryError, NotFoundError, ValueError, KeyError) as err:
            log.warning("parent snapshot tree unreadable, files will be read again: %s", err)
            return {}

    def _virtual_dir(self, orig: bytes, hierarchy: dict[bytes, Any], parent: dict[bytes, Node]) -> _DirJob:
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
            if len(access) > ANCHOR_AFTER:
                job.anchor = os.open(access, _DIR_FLAGS)
                self._anchors.add(job.anchor)
                access = b"/proc/self/fd/%d" % job.anchor
            with os.scandir(access) as it:
                # the listing's type (d_type, no stat) names an entry that cannot be stat'ed
                listed = sorted((entry.name, _listed_type(entry)) for entry in it)
        except OSError as err:
            job.error = f"directory not listed: {_reason(err)}"
            self._error(orig, job.error)
            listed = []
        for name, kind in listed:
            child_orig = join(orig, name)
            if child_orig in self.skip_paths or self.filter.excluded(child_orig):
                continue
            child_read = join(read_path, name)
            child_access = child_read if access is read_path else join(access, name)
            try:
                st = os.lstat(child_access)
            except FileNotFoundError:
                self._warn(child_orig, "vanished while the directory was read; not in the snapshot")
                continue
            except OSError as err:
                job.nodes.append(Node(name=name, type=kind, error=_reason(err)))
                self._error(child_orig, _reason(err))
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
        try:
            node = metadata.capture(access, st, name)
        except OSError as err:
            job.nodes.append(Node(name=name, type=metadata.node_type(st.st_mode), error=_reason(err)))
            self._error(orig, _reason(err))
            return
        job.nodes.append(node)
        stats = self.stats  # the walk's counters have one writer, this thread: no lock needed
        stats.current_path = orig
        if node.type == "dir":
            stats.dirs += 1
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
            if fut is None:
                node.content, node.size = list(first.content), first.size
            else:
                job.files.append((node, fut, text(orig)))
            stats.files_unmodified += 1
            return
        if copied:
            self._record_original(orig, st, node)
        if old is not None and self._unchanged(old, st, node, copied) and self._all_present(old.content):
            node.content = list(old.content)
            node.sparse = old.sparse or node.sparse
            stats.files_unmodified += 1
            if st.st_nlink > 1:
                self._links[link_key] = (node, None)
            return
        if old is None:
            stats.files_new += 1
        else:
            stats.files_changed += 1
        self.file_slots.acquire()
        try:
            fut = self.readers.submit(self._read_file, access, node)
        except BaseException:
            self.file_slots.release()
            raise
        fut.add_done_callback(lambda _f: self.file_slots.release())
        job.files.append((node, fut, text(orig)))
        if st.st_nlink > 1:
            self._links[link_key] = (node, fut)

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

    def _all_present(self, blob_ids: list[bytes]) -> bool:
        try:
            return all(self.store.has_blob(blob_id) for blob_id in blob_ids)
        except (RepositoryError, NotFoundError):
            return False

    def _error(self, path: bytes | str, err: BaseException | str) -> None:
        reason = err if isinstance(err, str) else (getattr(err, "strerror", None) or str(err))
        shown = path if isinstance(path, str) else text(path)
        log.warning("%s: %s", shown, reason)
        with self.stats.lock:
            self.stats.errors.append((shown, str(reason)))

    def _warn(self, path: bytes | str, reason: str) -> None:
        shown = path if isinstance(path, str) else text(path)
        log.info("%s: %s", shown, reason)
        with self.stats.lock:
            self.stats.warnings.append((shown, reason))

    # -- directory completion ----------------------------------------------------------------------

    def _finish(self, job: _DirJob) -> None:
        self._finished.append(job)
        self._drain(block=False)

    def _drain(self, *, block: bool) -> None:
        """Write the TREE blobs of finished directories whose files are all done, in walk order."""
        while self._finished and (block or self._finished[0].ready()):
            self._write_tree(self._finished.popleft())

    def _write_tree(self, job: _DirJob) -> None:
        for node, fut, path in job.files:
            try:
                stored = fut.result()
            except _FileError as err:
                node.content = []
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
        data = encode_tree(Tree(nodes=job.nodes))
        job.tree_id = self.store.save_blob(self.tree_kind, data)
        job.nodes, job.files, job.subdirs = [], [], []
        if job.anchor is not None:  # every entry below it is done: nothing reaches through it any more
            self._anchors.discard(job.anchor)
            os.close(job.anchor)
            job.anchor = None

    # -- reading files (reader threads) ------------------------------------------------------------

    def _read_file(self, read_path: bytes, node: Node) -> _Content:
        """Cut one file into chunks and save them: the DATA blob ids in order, and how many bytes.

        The node gets the metadata of what is read (fstat of the open file), except its size, which
        is the number of bytes stored (set when the tree is written): a file that grows or shrinks
        while it is read is restored as it was read, and the change is reported."""
        try:
            fd = os.open(read_path, _OPEN_FLAGS)
        except PermissionError:
            try:
                fd = os.open(read_path, _OPEN_FLAGS & ~getattr(os, "O_NOATIME", 0))
            except OSError as err:
                raise _FileError(err.strerror or str(err)) from err
        except OSError as err:
            raise _FileError(err.strerror or str(err)) from err
        pending: list[Future[bytes]] = []
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _FileError("changed into something that is not a regular file")
            # the file may have changed since the walk's lstat: describe what was actually read
            node.mtime_ns, node.ctime_ns, node.inode = st.st_mtime_ns, st.st_ctime_ns, st.st_ino
            node.sparse = st.st_blocks * 512 < st.st_size
            if st.st_size < self.single_chunk:
                data = self._read_upto(fd, self.single_chunk, st.st_size + 1)
                if len(data) < self.single_chunk:  # the whole file: one chunk
                    blob_ids = [self._save_chunk(data)] if data else []
                    return _Content(blob_ids, len(data), self._changed(fd, st, len(data)))
                os.lseek(fd, 0, os.SEEK_SET)  # it grew since fstat: cut it like any large file
            # one large file is cut at a time: a stream chunker holds a buffer of twice the largest
            # chunk, and the blob threads already work on its chunks in parallel
            stored = 0
            with self.large_file, open(fd, "rb", buffering=0, closefd=False) as stream:
                for chunk in self.chunker(stream):
                    stored += len(chunk)
                    self.chunk_slots.acquire()
                    try:
                        fut = self.blobbers.submit(self._save_chunk, chunk)
                    except BaseException:
                        self.chunk_slots.release()
                        raise
                    fut.add_done_callback(lambda _f: self.chunk_slots.release())
                    pending.append(fut)
            blob_ids = [fut.result() for fut in pending]
            return _Content(blob_ids, stored, self._changed(fd, st, stored))
        except OSError as err:
            for fut in pending:
                fut.cancel()
            raise _FileError(_reason(err)) from err
        except IntegrityError as err:
            raise _FileError(str(err)) from err
        finally:
            os.close(fd)

    @staticmethod
    def _changed(fd: int, before: os.stat_result, stored: int) -> bool:
        """Whether the file changed while it was read: not the size its fstat said, or written since."""
        after = os.fstat(fd)
        return (
            stored != before.st_size
            or after.st_size != before.st_size
            or after.st_mtime_ns != before.st_mtime_ns
            or after.st_ctime_ns != before.st_ctime_ns
        )

    @staticmethod
    def _read_upto(fd: int, limit: int, expected: int) -> bytes:
        """Up to `limit` bytes from the start of the file (fewer at end of file); reads of `expected`
        bytes first, so a small file costs a small buffer."""
        parts, got = [], 0
        while got < limit:
            block = os.read(fd, min(limit - got, max(expected - got, 4096)))
            if not block:
                break
            parts.append(block)
            got += len(block)
        return b"".join(parts)

    def _save_chunk(self, chunk: bytes) -> bytes:
        blob_id = self.store.save_blob(self.data_kind, chunk)
        with self.stats.lock:
            self.stats.bytes_read += len(chunk)
            self.stats.blobs_saved += 1
        return blob_id
