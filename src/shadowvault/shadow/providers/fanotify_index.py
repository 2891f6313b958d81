"""The point-in-time index of a volume for the fanotify provider: its namespace, metadata and pinned files.

Taken while the volume is frozen: every directory, symlink and special file is recorded with its
metadata, and every regular file is also opened (O_RDONLY | O_NOATIME) and kept open for the life
of the shadow. The open descriptor pins the inode, so an unlink or a rename-over after the point in
time cannot free the data, and it does so without touching the file (a hard link would change its
link count and ctime, which incremental backups compare). Reads with O_NOATIME never write to the
frozen filesystem. Descriptors opened before the fanotify mark exists raise no events of their own.
"""

from __future__ import annotations

import errno
import os
import resource
import stat
from dataclasses import dataclass, field

ROOT_NODE = 1
_OPEN_FLAGS = os.O_RDONLY | os.O_NOATIME | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOATIME | os.O_NOFOLLOW | os.O_CLOEXEC
_SPARE_FDS = 256


class TooManyFilesError(Exception):
    """The volume holds more files than this process may keep open."""


@dataclass
class Entry:
    """One inode as it was at the point in time (a hard-linked file is one entry under several names)."""

    node: int
    st: os.stat_result
    fd: int = -1  # a regular file's pinned descriptor
    target: bytes = b""  # a symlink's target
    children: dict[bytes, int] = field(default_factory=dict)  # a directory's names -> nodes
    xattrs: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Index:
    """The whole tree at the point in time, by FUSE node id and by inode number."""

    entries: dict[int, Entry] = field(default_factory=dict)
    by_inode: dict[int, int] = field(default_factory=dict)
    skipped_mounts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def entry_of_inode(self, ino: int) -> Entry | None:
        node = self.by_inode.get(ino)
        return self.entries[node] if node is not None else None

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries.values() if e.fd >= 0)

    def close(self) -> None:
        for entry in self.entries.values():
            if entry.fd >= 0:
                os.close(entry.fd)
                entry.fd = -1


def raise_fd_limit() -> int:
    """Raise this process's descriptor limit as far as the kernel allows; the new soft limit."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            most = int(f.read())
    except OSError:
        most = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    for limit in (most, resource.getrlimit(resource.RLIMIT_NOFILE)[1]):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            return limit
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _xattrs(target: int | str, dir_fd: int | None = None) -> dict[str, bytes]:
    """Extended attributes (ACLs included); symlinks' are left out (none in practice)."""
    try:
        if isinstance(target, int):
            names = os.listxattr(target)
            return {n: os.getxattr(target, n) for n in names}
        return {}
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.ENODATA):
            return {}
        raise


class IndexBuilder:
    """Walks a frozen volume once into an Index, skipping `skip` (our own directories) and other mounts."""

    def __init__(self, mount_point: str, skip_names: frozenset[bytes] = frozenset()) -> None:
        self.mount_point = mount_point
        self.skip_names = skip_names  # names left out at the volume's root (its .shadowvault)
        self.index = Index()
        self._fd_budget = raise_fd_limit() - _SPARE_FDS
        self._next = ROOT_NODE

    def build(self) -> Index:
        root_fd = os.open(self.mount_point, _DIR_FLAGS)
        try:
            st = os.fstat(root_fd)
            self._dev = st.st_dev
            root = self._add(st)
            root.xattrs = _xattrs(root_fd)
            self._walk(root, root_fd, self.mount_point, top=True)
        except BaseException:
            self.index.close()
            raise
        finally:
            os.close(root_fd)
        return self.index

    def _add(self, st: os.stat_result, *, register: bool = True) -> Entry:
        """A new entry; `register`: known by its inode number (not for another filesystem's root)."""
        entry = Entry(node=self._next, st=st)
        self.index.entries[entry.node] = entry
        if register:
            self.index.by_inode[st.st_ino] = entry.node
        self._next += 1
        return entry

    def _walk(self, parent: Entry, dir_fd: int, path: str, *, top: bool = False) -> None:
        with os.scandir(dir_fd) as it:
            names = [os.fsencode(e.name) for e in it]
        for name in names:
            if top and name in self.skip_names:
                continue
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            child_path = os.path.join(path, os.fsdecode(name))
            if st.st_dev != self._dev:  # another filesystem mounted here: an empty directory in the shadow
                self.index.skipped_mounts.append(child_path)
                parent.children[name] = self._add(st, register=False).node
                continue
            known = self.index.by_inode.get(st.st_ino)
            if known is not None and not stat.S_ISDIR(st.st_mode):
                parent.children[name] = known  # another name of a file already pinned
                continue
            entry = self._add(st)
            parent.children[name] = entry.node
            if stat.S_ISDIR(st.st_mode):
                fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                try:
                    entry.xattrs = _xattrs(fd)
                    self._walk(entry, fd, child_path)
                finally:
                    os.close(fd)
            elif stat.S_ISREG(st.st_mode):
                self._pin(entry, name, dir_fd, child_path)
            elif stat.S_ISLNK(st.st_mode):
                entry.target = os.readlink(name, dir_fd=dir_fd)

    def _pin(self, entry: Entry, name: bytes, dir_fd: int, path: str) -> None:
        if self._fd_budget <= 0:
            raise TooManyFilesError(f"{self.mount_point} holds more files than can be kept open")
        entry.fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
        self._fd_budget -= 1
        entry.st = os.fstat(entry.fd)
        try:
            entry.xattrs = _xattrs(entry.fd)
        except OSError as err:
            self.index.problems.append(f"{path}: extended attributes not read: {err.strerror}")
