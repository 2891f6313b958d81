"""Lay a snapshot's tree back down: content, owners, modes, times, ACLs, xattrs, links, devices, holes.

Every entry is created under a temporary name in its final directory (`.svtmp-*`), given its
metadata, and renamed: an interrupted restore never leaves a half-written file under a final name.
Directories get their metadata after their contents (a read-only directory is filled first, and a
default ACL is applied after the files were created with their own ACLs). Files are restored by a
pool of threads; directories are finished in the order the walk left them.

A blob that fails verification fails only the file that needs it: it is reported, the rest is restored.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import stat
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import blake3

from shadowvault.archive import metadata
from shadowvault.archive.patterns import PathFilter
from shadowvault.archive.store import BlobStore
from shadowvault.errors import NotFoundError, RepositoryError, UsageError
from shadowvault.repo.tree import Node, Tree, decode_tree

log = logging.getLogger(__name__)

HOLE_BLOCK = 4096
_ZEROS = bytes(HOLE_BLOCK)
TMP_PREFIX = b".svtmp-"


class Overwrite(StrEnum):
    NEVER = "never"
    IF_NEWER = "if-newer"
    ALWAYS = "always"


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    others: int = 0
    bytes_written: int = 0
    skipped: int = 0
    verified: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "dirs": self.dirs,
            "others": self.others,
            "bytes_written": self.bytes_written,
            "skipped": self.skipped,
            "verified": self.verified,
            "errors": len(self.errors),
        }


class _EntryError(Exception):
    pass


@dataclass
class _DirJob:
    path: bytes
    node: Node | None
    futures: list[Future[None]] = field(default_factory=list)

    def ready(self) -> bool:
        return all(f.done() for f in self.futures)


def _join(parent: bytes, name: bytes) -> bytes:
    return parent.rstrip(b"/") + b"/" + name


def _text(path: bytes) -> str:
    return path.decode("utf-8", errors="backslashreplace")  # for messages: \xNN for invalid bytes


def _has_default_acl(directory: bytes) -> bool:
    """Whether files created in `directory` inherit an ACL (which a restore must then remove)."""
    try:
        return "system.posix_acl_default" in os.listxattr(directory)
    except OSError:
        return True  # unknown: check every file


def _blocked_by_non_dir(path: bytes) -> bool:
    """True when something other than a real directory (a file, a symlink) sits at `path`."""
    try:
        return not stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def find_node(store: BlobStore, root_tree: bytes, subpath: str | bytes) -> Node | None:
    """The node at `subpath` in the snapshot (None for the root itself); NotFoundError when absent."""
    raw = subpath.encode("utf-8", errors="surrogateescape") if isinstance(subpath, str) else subpath
    parts = [p for p in raw.split(b"/") if p]
    node: Node | None = None
    tree_id: bytes | None = root_tree
    walked = b""
    for part in parts:
        if tree_id is None:
            raise NotFoundError(f"{_text(raw)}: {_text(walked)} is not a directory in the snapshot")
        tree = decode_tree(store.load_blob(tree_id))
        node = next((n for n in tree.nodes if n.name == part), None)
        walked += b"/" + part
        if node is None:
            raise NotFoundError(f"{_text(raw)}: no such path in the snapshot")
        tree_id = node.subtree if node.type == "dir" else None
    return node


class Restorer:
    """Restores a snapshot tree (or part of it) into a target directory."""

    def __init__(
        self,
        store: BlobStore,
        target: str | bytes,
        *,
        path_filter: PathFilter | None = None,
        overwrite: Overwrite | str = Overwrite.NEVER,
        verify: bool = False,
        numeric_owner: bool = False,
        workers: int | None = None,
        max_files: int = 64,
        stats: RestoreStats | None = None,
    ):
        self.store = store
        self.target = os.fsencode(target)
        self.filter = path_filter or PathFilter()
        self.overwrite = Overwrite(overwrite)
        self.verify = verify
        self.numeric_owner = numeric_owner
        self.stats = stats or RestoreStats()
        # file restores wait on disk more than on the CPU: more threads than cores pay off
        workers = workers or max(4, 4 * (os.cpu_count() or 2))
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="sv-restore")
        self.slots = threading.BoundedSemaphore(max_files)
        self._links: dict[tuple[int, int], Future[bytes | None]] = {}
        self._finished: collections.deque[_DirJob] = collections.deque()
        self._tmp_counter = itertools.count()
        # destination directory -> (made empty by this restore, has a default ACL that new files inherit)
        self._dir_state: dict[bytes, tuple[bool, bool]] = {}

    def restore(self, root_tree: bytes, subpath: str | bytes = "/") -> RestoreStats:
        """Restore the snapshot below `subpath` into the target (the whole snapshot keeps its full paths)."""
        if os.path.lexists(self.target) and not os.path.isdir(self.target):
            raise UsageError(f"{_text(self.target)} exists and is not a directory")
        os.makedirs(self.target, exist_ok=True)
        self._dir_state[self.target] = (False, _has_default_acl(self.target))
        node = find_node(self.store, root_tree, subpath)
        raw_sub = subpath.encode("utf-8", errors="surrogateescape") if isinstance(subpath, str) else subpath
        snap_path = b"/" + b"/".join(p for p in raw_sub.split(b"/") if p)
        try:
            if node is None:
                self._restore_dir(root_tree, b"/", self.target, lambda: None)
            elif node.type == "dir":
                assert node.subtree is not None
                self._restore_dir(node.subtree, snap_path, self.target, lambda: None)
            else:
                job = _DirJob(self.target, None)
                self._submit_entry(node, snap_path, self.target, job)
                self._finished.append(job)
            self._drain(block=True)
        except BaseException:
            self.pool.shutdown(wait=False, cancel_futures=True)  # interrupted: drop the queued files
            raise
        finally:
            self.pool.shutdown(wait=True)
        return self.stats

    # -- walking (main thread) ---------------------------------------------------------------------

    def _restore_dir(self, tree_id: bytes, snap_dir: bytes, dest: bytes, ensure_dest) -> None:
        try:
            tree: Tree = decode_tree(self.store.load_blob(tree_id))
        except (RepositoryError, NotFoundError, ValueError) as err:
            self._error(snap_dir, f"directory listing unreadable: {err}")
            return
        job = _DirJob(dest, None)
        for node in tree.nodes:
            spath = _join(snap_dir, node.name)
            if node.type == "dir":
                self._restore_subdir(node, spath, _join(dest, node.name), ensure_dest)
                continue
            if not self.filter.included(spath):
                continue
            ensure_dest()
            self._submit_entry(node, spath, dest, job)
        self._finished.append(job)
        self._drain(block=False)

    def _restore_subdir(self, node: Node, spath: bytes, dest: bytes, ensure_parent) -> None:
        selected = self.filter.included(spath)
        if not selected and not self.filter.may_contain(spath):
            return
        if self.overwrite is not Overwrite.ALWAYS and _blocked_by_non_dir(dest):
            self._error(spath, "not restored: a non-directory is in the way (--overwrite always replaces it)")
            return
        created = False

        def ensure() -> None:
            nonlocal created
            if created:
                return
            ensure_parent()
            self._make_dir(dest, spath)
            created = True

        if selected:
            ensure()
        if node.subtree is not None:
            self._restore_dir(node.subtree, spath, dest, ensure)
        if created:
            self._finished.append(_DirJob(dest, node))
            with self.stats.lock:
                self.stats.dirs += 1

    def _make_dir(self, dest: bytes, spath: bytes) -> None:
        fresh = True
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            os.mkdir(dest, 0o700)
        else:
            if stat.S_ISDIR(st.st_mode):
                fresh = False
            elif self.overwrite is Overwrite.ALWAYS:
                os.unlink(dest)
                os.mkdir(dest, 0o700)
            else:
                raise UsageError(
                    f"{_text(dest)} exists and is not a directory (--overwrite always replaces it)"
                )
        self._dir_state[dest] = (fresh, _has_default_acl(dest))

    def _submit_entry(self, node: Node, spath: bytes, dest_dir: bytes, job: _DirJob) -> None:
        link_first: Future[bytes | None] | None = None
        key = (node.device, node.inode)
        if node.nlink > 1 and node.type != "dir" and node.inode:
            link_first = self._links.get(key)
        self.slots.acquire()
        try:
            fut: Future[Any] = self.pool.submit(self._restore_entry, node, spath, dest_dir, link_first)
        except BaseException:
            self.slots.release()
            raise
        fut.add_done_callback(lambda _f: self.slots.release())
        if node.nlink > 1 and node.type != "dir" and node.inode and link_first is None:
            self._links[key] = fut
        job.futures.append(fut)

    def _drain(self, *, block: bool) -> None:
        """Apply directory metadata once everything inside a directory is done, in post-order."""
        while self._finished and (block or self._finished[0].ready()):
            job = self._finished.popleft()
            for fut in job.futures:
                fut.exception()  # wait; errors were recorded by the entry itself
            if job.node is not None:
                try:
                    metadata.apply(job.path, job.node, numeric_owner=self.numeric_owner)
                except OSError as err:
                    self._error(job.path, f"metadata not restored: {err.strerror or err}")

    # -- entries (worker threads) ------------------------------------------------------------------

    def _error(self, path: bytes, reason: str) -> None:
        log.warning("%s: %s", _text(path), reason)
        with self.stats.lock:
            self.stats.errors.append((_text(path), reason))

    def _restore_entry(
        self, node: Node, spath: bytes, dest_dir: bytes, link_first: Future[bytes | None] | None
    ) -> bytes | None:
        """Restore one non-directory entry; returns its final path (for hard links), None if not restored."""
        final = _join(dest_dir, node.name)
        if node.error is not None:
            with self.stats.lock:
                reason = f"not restored, it was unreadable at backup: {node.error}"
                self.stats.warnings.append((_text(spath), reason))
                self.stats.skipped += 1
            return None
        fresh, inherits_acl = self._dir_state.get(dest_dir, (False, True))
        if not fresh and not self._may_replace(final, node):
            with self.stats.lock:
                self.stats.skipped += 1
            return None
        tmp = _join(dest_dir, TMP_PREFIX + b"%d-%d" % (os.getpid(), next(self._tmp_counter)))
        try:
            first = link_first.result() if link_first is not None else None
            if first is not None:
                os.link(first, tmp)
            else:
                self._create(node, tmp, inherits_acl)
            os.rename(tmp, final)
        except (OSError, RepositoryError, NotFoundError, _EntryError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            self._discard(tmp)
            self._error(spath, reason)
            return None
        except BaseException:
            self._discard(tmp)
            raise
        with self.stats.lock:
            if node.type == "file":
                self.stats.files += 1
            else:
                self.stats.others += 1
        return final

    @staticmethod
    def _discard(tmp: bytes) -> None:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass

    def _may_replace(self, final: bytes, node: Node) -> bool:
        try:
            st = os.lstat(final)
        except FileNotFoundError:
            return True
        if stat.S_ISDIR(st.st_mode):
            if self.overwrite is Overwrite.NEVER:
                return False
            raise _EntryError("a directory is in the way (not replaced)")
        if self.overwrite is Overwrite.ALWAYS:
            return True
        if self.overwrite is Overwrite.IF_NEWER:
            return node.mtime_ns > st.st_mtime_ns
        return False

    def _create(self, node: Node, tmp: bytes, inherits_acl: bool) -> None:
        kind = node.type
        if kind == "file":
            self._write_file(node, tmp, inherits_acl)
            return
        if kind == "symlink":
            assert node.link_target is not None
            os.symlink(node.link_target, tmp)
        elif kind == "fifo":
            os.mkfifo(tmp, 0o600)
        elif kind in ("chardev", "blockdev", "socket"):
            os.mknod(tmp, 0o600 | metadata.type_bits(kind), node.rdev or 0)
        else:
            raise _EntryError(f"unknown entry type {kind!r}")
        metadata.apply(tmp, node, numeric_owner=self.numeric_owner, clear_inherited_acl=inherits_acl)

    def _write_file(self, node: Node, tmp: bytes, inherits_acl: bool) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            hasher = blake3.blake3() if self.verify else None
            offset = 0
            for blob_id in node.content:
                data = self.store.load_blob(blob_id)
                if hasher is not None:
                    hasher.update(data)
                if node.sparse:
                    self._write_sparse(fd, data, offset)
                else:
                    view = memoryview(data)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                offset += len(data)
                with self.stats.lock:
                    self.stats.bytes_written += len(data)
            if node.sparse:
                os.ftruncate(fd, offset)
            metadata.apply(
                tmp, node, numeric_owner=self.numeric_owner, fd=fd, clear_inherited_acl=inherits_acl
            )
        finally:
            os.close(fd)
        if hasher is not None:
            self._verify(tmp, hasher.digest())

    @staticmethod
    def _write_sparse(fd: int, data: bytes, offset: int) -> None:
        """Write `data` at `offset`, leaving aligned all-zero blocks as holes."""
        view = memoryview(data)
        pos = 0
        end = len(data)
        while pos < end:
            block_end = min(end, pos + HOLE_BLOCK - (offset + pos) % HOLE_BLOCK)
            start = pos
            # gather a run of blocks of the same kind (data or zeros)
            zero = view[pos:block_end] == _ZEROS[: block_end - pos]
            pos = block_end
            while pos < end:
                nxt = min(end, pos + HOLE_BLOCK)
                if (view[pos:nxt] == _ZEROS[: nxt - pos]) != zero:
                    break
                pos = nxt
            if not zero:
                chunk = view[start:pos]
                at = offset + start
                while chunk:
                    written = os.pwrite(fd, chunk, at)
                    chunk, at = chunk[written:], at + written

    def _verify(self, path: bytes, expected: bytes) -> None:
        hasher = blake3.blake3()
        with open(path, "rb", buffering=0) as f:
            while block := f.read(1 << 20):
                hasher.update(block)
        if hasher.digest() != expected:
            raise _EntryError("verification failed: the restored bytes differ from the snapshot")
        with self.stats.lock:
            self.stats.verified += 1
