"""Lay a snapshot's tree back down: content, owners, modes, times, ACLs, xattrs, links, devices, holes.

Every entry is created under a temporary name in its final directory (`.svtmp-*`), given its
metadata, and renamed: an interrupted restore never leaves a half-written file under a final name.
Directories get their metadata after their contents (a read-only directory is filled first, and a
default ACL is applied after the files were created with their own ACLs). Files are restored by a
pool of threads; directories are finished in the order the walk left them.

A blob that fails verification fails only the file that needs it: it is reported, the rest is restored.

A snapshot is untrusted input (anyone with the password can write one), and so is the target (a
symlink can be planted in it). Nothing is ever reached through a path string: the target is opened
once, every directory below it is opened relative to its parent with O_NOFOLLOW, and every entry is
created, renamed, linked and given its metadata relative to those descriptors. An entry whose name
is not a single component (`..`, `a/b`, empty, NUL, a name twice in one directory) is an error of
the result, never a path. At most MAX_OPEN_DIRS directories are held open at once.

Every failure in a worker thread, foreseen or not, ends up in `RestoreStats.errors` with its path.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import blake3

from shadowvault.archive import metadata
from shadowvault.archive.patterns import PathFilter
from shadowvault.archive.store import BlobStore
from shadowvault.errors import NotFoundError, RepositoryError, UsageError
from shadowvault.repo.tree import Node, decode_tree, duplicate_names, invalid_name

log = logging.getLogger(__name__)

HOLE_BLOCK = 4096
_ZEROS = bytes(HOLE_BLOCK)
TMP_PREFIX = b".svtmp-"
MAX_OPEN_DIRS = 128  # directory descriptors held at once (besides the ones on the walk's own path)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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


@dataclass(eq=False)
class _Dir:
    """A directory of the target as this restore holds it: an open descriptor once made, never a path."""

    parent: _Dir | None
    name: bytes  # its name in the parent (b"" for the target itself)
    spath: bytes  # its path in the snapshot: for filters and messages
    node: Node | None  # the metadata it gets once its contents are done (None: the target, left as is)
    rel: tuple[bytes, ...] = ()  # its names below the target (to find a hard link's first path again)
    fd: int | None = None
    fresh: bool = False  # made empty by this restore: nothing in it to check before creating an entry
    inherits_acl: bool = True  # has a default ACL that new entries inherit (and must lose)
    failed: bool = False  # could not be made or opened (reported once)


@dataclass
class _DirJob:
    """A directory's entries being restored by the workers: its metadata waits for all of them."""

    dir: _Dir
    entries: list[tuple[Future[Any], bytes]] = field(default_factory=list)  # (future, snapshot path)

    def ready(self) -> bool:
        return all(f.done() for f, _ in self.entries)


@dataclass
class _Frame:
    """A directory being walked: its job, the entries not visited yet, the names it holds twice."""

    job: _DirJob
    nodes: Iterator[Node]
    twice: set[bytes]


def _join(parent: bytes, name: bytes) -> bytes:
    return parent.rstrip(b"/") + b"/" + name


def _text(path: bytes) -> str:
    return path.decode("utf-8", errors="backslashreplace")  # for messages: \xNN for invalid bytes


def _unsafe_text(parent: bytes, name: bytes) -> str:
    """The snapshot path of an entry with an unsafe name: `/` and control bytes of the name as \\xNN."""
    shown = "".join(
        f"\\x{ord(c):02x}" if c == "/" or ord(c) < 0x20 or ord(c) == 0x7F else c
        for c in name.decode("utf-8", errors="backslashreplace")
    )
    return _text(parent.rstrip(b"/")) + "/" + shown


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    if isinstance(err, (RepositoryError, NotFoundError, _EntryError)):
        return str(err)
    return f"unexpected {type(err).__name__}: {err}"


def _has_default_acl(dir_fd: int) -> bool:
    """Whether files created in the directory inherit an ACL (which a restore must then remove)."""
    try:
        return "system.posix_acl_default" in os.listxattr(dir_fd)
    except OSError:
        return True  # unknown: check every file


def find_node(store: BlobStore, root_tree: bytes, subpath: str | bytes) -> Node | None:
    """The node at `subpath` in the snapshot (None for the root itself); NotFoundError when absent.

    `.` and `..` are refused, not resolved: a snapshot path names entries, and a crafted tree may
    hold an entry called `..`.
    """
    raw = subpath.encode("utf-8", errors="surrogateescape") if isinstance(subpath, str) else subpath
    parts = [p for p in raw.split(b"/") if p]
    for part in parts:
        if (why := invalid_name(part)) is not None:
            raise UsageError(f"{_text(raw)}: not a snapshot path ({why})")
    node: Node | None = None
    tree_id: bytes | None = root_tree
    walked = b""
    for part in parts:
        if tree_id is None:
            raise NotFoundError(f"{_text(raw)}: {_text(walked)} is not a directory in the snapshot")
        try:
            tree = decode_tree(store.load_blob(tree_id))
        except ValueError as err:
            raise RepositoryError(f"{_text(raw)}: the listing of {_text(walked or b'/')} is damaged") from err
        matches = [n for n in tree.nodes if n.name == part]
        walked += b"/" + part
        if not matches:
            raise NotFoundError(f"{_text(raw)}: no such path in the snapshot")
        if len(matches) > 1:
            raise RepositoryError(f"{_text(raw)}: {_text(walked)} appears more than once in the snapshot")
        node = matches[0]
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
        self._links: dict[tuple[int, int], Future[tuple[bytes, ...] | None]] = {}
        self._finished: collections.deque[_DirJob] = collections.deque()
        self._tmp_counter = itertools.count()
        self._open: set[_Dir] = set()  # directories whose descriptor is open (main thread only)
        self._root = _Dir(None, b"", b"/", None)

    def restore(self, root_tree: bytes, subpath: str | bytes = "/") -> RestoreStats:
        """Restore the snapshot below `subpath` into the target (the whole snapshot keeps its full paths)."""
        if os.path.lexists(self.target) and not os.path.isdir(self.target):
            raise UsageError(f"{_text(self.target)} exists and is not a directory")
        node = find_node(self.store, root_tree, subpath)
        os.makedirs(self.target, exist_ok=True)
        raw_sub = subpath.encode("utf-8", errors="surrogateescape") if isinstance(subpath, str) else subpath
        root = self._root
        root.spath = b"/" + b"/".join(p for p in raw_sub.split(b"/") if p)
        root.fd = os.open(self.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the user's own path
        self._open.add(root)
        root.inherits_acl = _has_default_acl(root.fd)
        try:
            if node is None:
                self._walk(root_tree, root)
            elif node.type == "dir":
                self._walk(node.subtree, root)
            else:
                job = _DirJob(root)
                self._submit_entry(node, root.spath, root, job)
                self._finished.append(job)
            self._drain(block=True)
        except BaseException:
            self.pool.shutdown(wait=False, cancel_futures=True)  # interrupted: drop the queued files
            raise
        finally:
            self.pool.shutdown(wait=True)
            for left in list(self._open):
                self._close(left)
        return self.stats

    # -- walking (main thread) ---------------------------------------------------------------------

    def _walk(self, tree_id: bytes | None, top: _Dir) -> None:
        """Depth first with a stack of its own (a crafted tree can be deeper than Python's recursion
        limit); a directory's job is queued when its last entry was visited, so jobs come in post-order."""
        stack = [self._frame(tree_id, top)]
        while stack:
            frame = stack[-1]
            node = next(frame.nodes, None)
            if node is None:
                stack.pop()
                self._finished.append(frame.job)
                self._drain(block=False)
            elif (below := self._visit(node, frame)) is not None:
                stack.append(below)

    def _frame(self, tree_id: bytes | None, here: _Dir) -> _Frame:
        nodes: list[Node] = []
        if tree_id is not None:
            try:
                nodes = decode_tree(self.store.load_blob(tree_id)).nodes
            except (RepositoryError, NotFoundError, ValueError) as err:
                self._error(here.spath, f"directory listing unreadable: {err}")
        return _Frame(_DirJob(here), iter(nodes), duplicate_names(nodes))

    def _visit(self, node: Node, frame: _Frame) -> _Frame | None:
        """Submit one entry of a directory; for a subdirectory to walk, its frame."""
        here = frame.job.dir
        spath = _join(here.spath, node.name)
        why = invalid_name(node.name)
        if why is None and node.name in frame.twice:
            why = "the name appears more than once in its directory"
        if why is not None:
            if self.filter.included(spath) or self.filter.may_contain(spath):
                self._error(_unsafe_text(here.spath, node.name), f"not restored: unsafe name ({why})")
            return None
        if node.type != "dir":
            if self.filter.included(spath) and self._ensure(here):
                self._submit_entry(node, spath, here, frame.job)
            return None
        selected = self.filter.included(spath)
        if not selected and not self.filter.may_contain(spath):
            return None
        below = _Dir(here, node.name, spath, node, (*here.rel, node.name))
        if selected and not self._ensure(below):
            return None
        return self._frame(node.subtree, below)

    def _ensure(self, here: _Dir) -> bool:
        """Make and open `here` (and its parents) on first use; False when it cannot be (reported once)."""
        missing: list[_Dir] = []
        walk: _Dir | None = here
        while walk is not None and walk.fd is None:
            missing.append(walk)
            walk = walk.parent
        missing.reverse()  # the topmost missing directory first
        for at, below in enumerate(missing):
            if below.failed or below.parent is None or not self._open_dir(below):
                for left in missing[at:]:
                    left.failed = True  # reported once, for the topmost
                return False
        return True

    def _open_dir(self, here: _Dir) -> bool:
        assert here.parent is not None and here.parent.fd is not None
        while len(self._open) >= MAX_OPEN_DIRS and self._finished:
            self._finish(self._finished.popleft())  # wait for the oldest directory, close it
        try:
            here.fd, here.fresh = self._open_subdir(here.parent.fd, here.name)
        except (OSError, _EntryError) as err:
            self._error(here.spath, _reason(err))
            return False
        self._open.add(here)
        here.inherits_acl = _has_default_acl(here.fd)
        with self.stats.lock:
            self.stats.dirs += 1
        return True

    def _open_subdir(self, parent_fd: int, name: bytes) -> tuple[int, bool]:
        """An fd of directory `name` in `parent_fd`, made if absent; never through a symlink."""
        fresh = False
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            fresh = True
        else:
            if not stat.S_ISDIR(st.st_mode):
                if self.overwrite is not Overwrite.ALWAYS:
                    raise _EntryError(
                        "not restored: something that is not a directory is in the way "
                        "(--overwrite always replaces it)"
                    )
                os.unlink(name, dir_fd=parent_fd)  # the symlink or file itself, never what it points to
                os.mkdir(name, 0o700, dir_fd=parent_fd)
                fresh = True
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd), fresh

    def _close(self, here: _Dir) -> None:
        if here.fd is not None:
            os.close(here.fd)
            here.fd = None
        self._open.discard(here)

    def _submit_entry(self, node: Node, spath: bytes, here: _Dir, job: _DirJob) -> None:
        link_first: Future[tuple[bytes, ...] | None] | None = None
        key = (node.device, node.inode)
        linked = node.nlink > 1 and node.inode != 0
        if linked:
            link_first = self._links.get(key)
        self.slots.acquire()
        try:
            fut: Future[Any] = self.pool.submit(self._entry_task, node, spath, here, link_first)
        except BaseException:
            self.slots.release()
            raise
        fut.add_done_callback(lambda _f: self.slots.release())
        if linked and link_first is None:
            self._links[key] = fut
        job.entries.append((fut, spath))

    def _drain(self, *, block: bool) -> None:
        """Apply directory metadata once everything inside a directory is done, in post-order."""
        while self._finished and (block or self._finished[0].ready()):
            self._finish(self._finished.popleft())

    def _finish(self, job: _DirJob) -> None:
        """Wait for a directory's entries, record any failure they did not, give it its metadata, close it."""
        for fut, spath in job.entries:
            err = fut.exception()
            if err is not None:  # entries record their own errors; this is the net under them
                self._error(spath, _reason(err))
        here = job.dir
        if here.fd is None or here is self._root:
            return
        try:
            if here.node is not None:
                metadata.apply_fd(here.fd, here.node, numeric_owner=self.numeric_owner, label=here.spath)
        except Exception as err:
            self._error(here.spath, f"metadata not restored: {_reason(err)}")
        finally:
            self._close(here)

    # -- entries (worker threads) ------------------------------------------------------------------

    def _error(self, path: bytes | str, reason: str) -> None:
        text = path if isinstance(path, str) else _text(path)
        log.warning("%s: %s", text, reason)
        with self.stats.lock:
            self.stats.errors.append((text, reason))

    def _entry_task(
        self, node: Node, spath: bytes, here: _Dir, link_first: Future[tuple[bytes, ...] | None] | None
    ) -> tuple[bytes, ...] | None:
        """A worker's job: whatever goes wrong is an error of the result that names the path."""
        try:
            return self._restore_entry(node, spath, here, link_first)
        except Exception as err:
            log.debug("restoring %s failed", _text(spath), exc_info=True)
            self._error(spath, _reason(err))
            return None

    def _restore_entry(
        self, node: Node, spath: bytes, here: _Dir, link_first: Future[tuple[bytes, ...] | None] | None
    ) -> tuple[bytes, ...] | None:
        """Restore one non-directory entry; returns its names below the target, None if not restored."""
        assert here.fd is not None
        if node.error is not None:
            with self.stats.lock:
                reason = f"not restored, it was unreadable at backup: {node.error}"
                self.stats.warnings.append((_text(spath), reason))
                self.stats.skipped += 1
            return None
        if not here.fresh and not self._may_replace(here.fd, node):
            with self.stats.lock:
                self.stats.skipped += 1
            return None
        tmp = TMP_PREFIX + b"%d-%d" % (os.getpid(), next(self._tmp_counter))
        try:
            first = link_first.result() if link_first is not None else None
            if first is not None:
                self._link(first, here, tmp)
            else:
                self._create(node, here, tmp)
            os.rename(tmp, node.name, src_dir_fd=here.fd, dst_dir_fd=here.fd)
        except Exception as err:
            self._discard(here.fd, tmp)
            self._error(spath, _reason(err))
            return None
        except BaseException:
            self._discard(here.fd, tmp)
            raise
        with self.stats.lock:
            if node.type == "file":
                self.stats.files += 1
            else:
                self.stats.others += 1
        return (*here.rel, node.name)

    @staticmethod
    def _discard(dir_fd: int, tmp: bytes) -> None:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass

    def _may_replace(self, dir_fd: int, node: Node) -> bool:
        try:
            st = os.stat(node.name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        if stat.S_ISDIR(st.st_mode):
            if self.overwrite is Overwrite.NEVER:
                return False
            raise _EntryError("not restored: a directory is in the way (it is never replaced by a file)")
        if self.overwrite is Overwrite.ALWAYS:
            return True
        if self.overwrite is Overwrite.IF_NEWER:
            return node.mtime_ns > st.st_mtime_ns
        return False

    def _link(self, first: tuple[bytes, ...], here: _Dir, tmp: bytes) -> None:
        """Hard-link `tmp` to the entry this restore made at `first`, walking to it without symlinks."""
        assert here.fd is not None and self._root.fd is not None
        *dirs, name = first
        if tuple(dirs) == here.rel:
            os.link(name, tmp, src_dir_fd=here.fd, dst_dir_fd=here.fd, follow_symlinks=False)
            return
        fd = os.dup(self._root.fd)
        try:
            for part in dirs:
                inner = os.open(part, os.O_PATH | _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = inner
            os.link(name, tmp, src_dir_fd=fd, dst_dir_fd=here.fd, follow_symlinks=False)
        finally:
            os.close(fd)

    def _create(self, node: Node, here: _Dir, tmp: bytes) -> None:
        assert here.fd is not None
        kind = node.type
        if kind == "file":
            self._write_file(node, here, tmp)
            return
        if kind == "symlink":
            if node.link_target is None:
                raise _EntryError("a symlink without a target in the snapshot")
            os.symlink(node.link_target, tmp, dir_fd=here.fd)
        elif kind == "fifo":
            os.mkfifo(tmp, 0o600, dir_fd=here.fd)
        elif kind in ("chardev", "blockdev", "socket"):
            os.mknod(tmp, 0o600 | metadata.type_bits(kind), node.rdev or 0, dir_fd=here.fd)
        else:
            raise _EntryError(f"unknown entry type {kind!r}")
        metadata.apply_at(
            here.fd,
            tmp,
            node,
            numeric_owner=self.numeric_owner,
            clear_inherited_acl=here.inherits_acl,
            label=_join(here.spath, node.name),
        )

    def _write_file(self, node: Node, here: _Dir, tmp: bytes) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=here.fd)
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
            metadata.apply_fd(
                fd,
                node,
                numeric_owner=self.numeric_owner,
                clear_inherited_acl=here.inherits_acl,
                label=_join(here.spath, node.name),
            )
            if hasher is not None:
                self._verify(fd, hasher.digest())
        finally:
            os.close(fd)

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

    def _verify(self, fd: int, expected: bytes) -> None:
        """Read the restored file back through its own descriptor and compare hashes."""
        hasher = blake3.blake3()
        offset = 0
        while block := os.pread(fd, 1 << 20, offset):
            hasher.update(block)
            offset += len(block)
        if hasher.digest() != expected:
            raise _EntryError("verification failed: the restored bytes differ from the snapshot")
        with self.stats.lock:
            self.stats.verified += 1
