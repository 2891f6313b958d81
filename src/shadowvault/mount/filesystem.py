"""The FUSE operations of the view (mfusepy's path-based API): look up, list, stat, read, xattrs.

Read-only through and through: the kernel refuses writes on the `ro` mount (EROFS), and `open` for
writing is refused here too. Paths are bytes on Linux; mfusepy hands them over decoded with
surrogateescape, so `os.fsencode` gives the stored names back exactly. A failure of the repository
(a damaged or missing blob) is logged and answered with EIO, for that read only.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import mfusepy

from shadowvault.archive.metadata import type_bits
from shadowvault.errors import ShadowvaultError
from shadowvault.mount.attrs import (
    VIRTUAL_DIR_MODE,
    VIRTUAL_LINK_MODE,
    Stat,
    inode_number,
    node_inode,
    node_stat,
    virtual_stat,
)
from shadowvault.mount.catalog import Catalog, Entry, Link, SnapshotDir, VirtualDir
from shadowvault.mount.content import Blobs, FileContent
from shadowvault.mount.trees import TreeCache
from shadowvault.repo.tree import Node

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# fuse_common.h (libfuse 3): the kernel checks POSIX ACLs itself, reading them through getxattr.
FUSE_CAP_POSIX_ACL = 1 << 19


@dataclass(frozen=True)
class InTree:
    """An entry inside a snapshot: its snapshot, its path there, and its node."""

    snapshot_id: str
    path: bytes
    node: Node


Found = Entry | InTree


def _fails_with_eio(func: F) -> F:
    """A repository failure becomes EIO for this call (and a line in the log), never a crash."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ShadowvaultError as err:
            log.error("%s: %s", args[1] if len(args) > 1 else "", err)
            raise mfusepy.FuseOSError(errno.EIO) from err

    return wrapper  # type: ignore[return-value]


def _fuse_error(err: OSError) -> mfusepy.FuseOSError:
    return mfusepy.FuseOSError(err.errno or errno.EIO)


class SnapshotFs(mfusepy.Operations):
    """The repository's snapshots as a read-only filesystem."""

    use_ns = True  # times in nanoseconds, as they are stored

    def __init__(
        self, catalog: Catalog, trees: TreeCache, blobs: Blobs, on_ready: Callable[[], None] | None = None
    ) -> None:
        self._catalog = catalog
        self._trees = trees
        self._blobs = blobs
        self._on_ready = on_ready
        self._files: dict[int, FileContent] = {}
        self._handles = itertools.count(1)
        self._uid = os.getuid()
        self._gid = os.getgid()
        self.mounted = False  # the kernel has the mount (init was called)
        self.acls_enforced = False  # the kernel checks the stored POSIX ACLs, not only the modes
        self._cwd = os.getcwd()

    # -- resolving paths ---------------------------------------------------------------------------

    def _resolve(self, path: str) -> Found:
        parts = [p for p in os.fsencode(path).split(b"/") if p]
        inside_a_snapshot = len(parts) > 2 and parts[0] == b"snapshots"
        entry: Found = self._catalog.root(fresh=not inside_a_snapshot)
        for i, part in enumerate(parts):
            if isinstance(entry, VirtualDir):
                found = entry.entries.get(os.fsdecode(part))
                if found is None:
                    raise mfusepy.FuseOSError(errno.ENOENT)
                entry = found
            elif isinstance(entry, SnapshotDir):
                rest = parts[i:]
                try:
                    node = self._trees.resolve(entry.snapshot.tree, rest)
                except OSError as err:
                    raise _fuse_error(err) from None
                assert node is not None
                return InTree(entry.snapshot_id, b"/" + b"/".join(rest), node)
            else:
                raise mfusepy.FuseOSError(errno.ENOTDIR)
        return entry

    def _entries(self, found: Found) -> dict[bytes, Node] | dict[str, Entry]:
        if isinstance(found, VirtualDir):
            return found.entries
        if isinstance(found, SnapshotDir):
            return self._trees.entries(found.snapshot.tree)
        if isinstance(found, InTree) and found.node.type == "dir":
            return self._trees.entries(found.node.subtree)
        raise mfusepy.FuseOSError(errno.ENOTDIR)

    # -- metadata ----------------------------------------------------------------------------------

    def _inode(self, found: Found, view_path: bytes) -> int:
        if isinstance(found, InTree):
            return node_inode(found.snapshot_id, found.path, found.node)
        if isinstance(found, SnapshotDir):
            return inode_number(found.snapshot_id, b"/")
        return inode_number("view", view_path)

    @_fails_with_eio
    def getattr(self, path: str, fh: int | None = None) -> Stat:
        found = self._resolve(path)
        ino = self._inode(found, os.fsencode(path))
        if isinstance(found, InTree):
            return node_stat(found.node, ino)
        if isinstance(found, SnapshotDir):
            return virtual_stat(VIRTUAL_DIR_MODE, ino, found.snapshot.time, self._uid, self._gid)
        if isinstance(found, Link):
            size = len(os.fsencode(found.target))
            return virtual_stat(VIRTUAL_LINK_MODE, ino, found.time, self._uid, self._gid, size)
        return virtual_stat(VIRTUAL_DIR_MODE, ino, found.time, self._uid, self._gid)

    @_fails_with_eio
    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        """Every entry with its type and inode number (an entry whose inode number is 0 is one that
        readdir(3) skips, so `.` and `..` get theirs too)."""
        here = os.fsencode(path).rstrip(b"/")
        found = self._resolve(path)
        parent = os.fsdecode(os.path.dirname(here) or b"/")
        listed = [
            (".", {"st_mode": VIRTUAL_DIR_MODE, "st_ino": self._inode(found, here or b"/")}, 0),
            ("..", {"st_mode": VIRTUAL_DIR_MODE, "st_ino": self.getattr(parent)["st_ino"]}, 0),
        ]
        for name, entry in self._entries(found).items():
            raw = os.fsencode(name)
            child = here + b"/" + raw
            if isinstance(entry, Node):
                try:
                    mode = type_bits(entry.type)
                except KeyError:
                    mode = stat.S_IFREG
                assert isinstance(found, (InTree, SnapshotDir))
                in_tree = found.path if isinstance(found, InTree) else b""
                ino = node_inode(found.snapshot_id, in_tree + b"/" + raw, entry)
            else:
                mode = VIRTUAL_LINK_MODE if isinstance(entry, Link) else VIRTUAL_DIR_MODE
                ino = self._inode(entry, child)
            listed.append((os.fsdecode(name), {"st_mode": mode, "st_ino": ino}, 0))
        return listed

    @_fails_with_eio
    def readlink(self, path: str) -> str:
        found = self._resolve(path)
        if isinstance(found, Link):
            return found.target
        if isinstance(found, InTree) and found.node.type == "symlink":
            return os.fsdecode(found.node.link_target or b"")
        raise mfusepy.FuseOSError(errno.EINVAL)

    @_fails_with_eio
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        found = self._resolve(path)
        value = found.node.xattrs.get(name) if isinstance(found, InTree) else None
        if value is None:
            raise mfusepy.FuseOSError(errno.ENODATA)
        return value

    @_fails_with_eio
    def listxattr(self, path: str) -> list[str]:
        found = self._resolve(path)
        return list(found.node.xattrs) if isinstance(found, InTree) else []

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    # -- content -----------------------------------------------------------------------------------

    @_fails_with_eio
    def open(self, path: str, flags: int) -> int:
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise mfusepy.FuseOSError(errno.EROFS)
        found = self._resolve(path)
        if not isinstance(found, InTree) or found.node.type != "file":
            raise mfusepy.FuseOSError(errno.EISDIR if not isinstance(found, (InTree, Link)) else errno.EINVAL)
        handle = next(self._handles)
        self._files[handle] = FileContent(self._blobs, found.node.content)
        return handle

    @_fails_with_eio
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        content = self._files.get(fh)
        if content is None:
            raise mfusepy.FuseOSError(errno.EBADF)
        return content.read(offset, size)

    def release(self, path: str, fh: int) -> int:
        self._files.pop(fh, None)
        return 0

    # -- life --------------------------------------------------------------------------------------

    def init_with_config(self, conn: Any, config: Any) -> None:
        """libfuse's init, with the connection: ask the kernel to check the stored POSIX ACLs as
        well as the modes. Without that, `default_permissions` judges by the mode bits alone, and
        under --allow-other a user a file's ACL shuts out (mode 0644, `user:bob:---`) could read it."""
        if conn is not None and mfusepy.fuse_version_major == 3 and conn.capable & FUSE_CAP_POSIX_ACL:
            conn.want |= FUSE_CAP_POSIX_ACL
            self.acls_enforced = True
        self.init("/")

    def init(self, path: str) -> None:
        """Called once the kernel has the mount: the view is ready. libfuse has made / the working
        directory by then; a repository given by a relative path must still mean what the user meant."""
        os.chdir(self._cwd)
        self.mounted = True
        log.info("the snapshot view is mounted")
        if self._on_ready is not None:
            self._on_ready()
