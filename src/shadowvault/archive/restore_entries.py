"""Laying one entry down in the restore target, through directory descriptors only.

A snapshot is untrusted input and so is the target (a symlink can be planted in it): every
directory is opened relative to its parent with O_NOFOLLOW, and every entry is created under a
temporary name in its final directory (`.svtmp-*`), given its metadata, and renamed, all relative
to those descriptors; a file is made unnamed (O_TMPFILE) where the filesystem can, and linked in
only once finished. An interrupted restore never leaves a half-written file under a final name.

File content is written elsewhere (`restore_content`), and what an entry's restore resolves to is
a future (`restore_outcomes`); this module decides whether an entry is restored at all, makes
links, symlinks, FIFOs and device nodes, and records what went wrong.
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from shadowvault.archive import metadata
from shadowvault.archive.restore_links import is_of_type
from shadowvault.archive.restore_outcomes import Restored
from shadowvault.archive.restore_places import TargetPlaces
from shadowvault.archive.tree_paths import join
from shadowvault.archive.unnamed_files import create_unnamed
from shadowvault.cancellation import Cancellation
from shadowvault.display import display_name, one_component
from shadowvault.errors import ShadowvaultError
from shadowvault.repo.tree import Node, entry_error

log = logging.getLogger(__name__)

TMP_PREFIX = b".svtmp-"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Overwrite(StrEnum):
    NEVER = "never"
    IF_NEWER = "if-newer"
    ALWAYS = "always"


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    others: int = 0
    bytes_written: int = 0  # data written: a hole, or a run of zeros, is not
    total_bytes: int = 0  # the sizes of the files restored, holes and all (restic's name)
    skipped: int = 0  # entries not laid down because they were unreadable at backup (kept: below)
    verified: int = 0
    # (snapshot path, why): already in the target and left as is; not restored; restored, but not
    # whole. Paths are the snapshot's bytes: a name that is not UTF-8 is shown escaped, exact in JSON.
    kept: list[tuple[bytes, str]] = field(default_factory=list)
    errors: list[tuple[bytes, str]] = field(default_factory=list)
    warnings: list[tuple[bytes, str]] = field(default_factory=list)
    places: TargetPlaces | None = None  # where each snapshot path is in the target (set by the restore)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    cancellation: Cancellation | None = None  # checked before every entry, blob and worker task

    def place(self, path: bytes) -> bytes | None:
        """The place in the target of a path of `kept`, `errors` or `warnings` (what a user looks
        at); None when the restore never said where its target is."""
        return self.places.place(path) if self.places is not None else None

    def as_dict(self) -> dict[str, int]:
        return {
            "files": self.files,
            "dirs": self.dirs,
            "others": self.others,
            "bytes_written": self.bytes_written,
            "total_bytes": self.total_bytes,
            "skipped": self.skipped,
            "verified": self.verified,
            "kept": len(self.kept),
            "errors": len(self.errors),
        }


# why an entry already in the target is left as it is (one string per mode: millions of kept files share it)
KEPT_REASONS = {
    Overwrite.NEVER: "already in the target (--overwrite never; always replaces it, if-newer when older)",
    Overwrite.IF_NEWER: "already in the target, not older than the snapshot's (--overwrite if-newer; always"
    " replaces it)",
}


class EntryError(Exception):
    """An entry is not restored; the message is the reason shown to the user."""


@dataclass(eq=False)
class TargetDir:
    """A directory of the target as this restore holds it: an open descriptor once made, never a path."""

    parent: TargetDir | None
    name: bytes  # its name in the parent (b"" for the target itself)
    spath: bytes  # its path in the snapshot: for filters and messages
    node: Node | None  # the metadata it gets once its contents are done (None: the target, left as is)
    rel: tuple[bytes, ...] = ()  # its names below the target (to find a hard link's first path again)
    fd: int | None = None
    fresh: bool = False  # made empty by this restore: nothing in it to check before creating an entry
    inherits_acl: bool = True  # has a default ACL that new entries inherit (and must lose)
    failed: bool = False  # could not be made or opened (reported once)
    new_gid: int = -1  # the group a file created in it gets (its own with setgid); -1: unknown


def created_gid(dir_fd: int) -> int:
    """The group a file created in the directory gets: the directory's own when it is setgid."""
    st = os.fstat(dir_fd)
    return st.st_gid if st.st_mode & stat.S_ISGID else os.getegid()


def process_umask() -> int | None:
    """This process's umask, read without changing it (None where /proc does not say)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def unsafe_path(parent: bytes, name: bytes) -> bytes:
    """The snapshot path of an entry with an unsafe name: its directory as every other path is
    recorded (so its place in the target follows), the name as `ls` shows it (`one_component`)."""
    return parent.rstrip(b"/") + b"/" + one_component(name)


def reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    if isinstance(err, (ShadowvaultError, EntryError)):
        return str(err)
    return f"unexpected {type(err).__name__}: {err}"


def has_default_acl(dir_fd: int) -> bool:
    """Whether files created in the directory inherit an ACL (which a restore must then remove)."""
    try:
        return "system.posix_acl_default" in os.listxattr(dir_fd)
    except OSError:
        return True  # unknown: check every file


def open_subdir(
    parent_fd: int, name: bytes, overwrite: Overwrite, parent_fresh: bool = False
) -> tuple[int, bool]:
    """An fd of directory `name` in `parent_fd`, made if absent (and whether it was); never through a
    symlink. In a parent this restore made (`parent_fresh`) nothing is in the way: no stat."""
    if parent_fresh:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd), True
    fresh = False
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        fresh = True
    else:
        if not stat.S_ISDIR(st.st_mode):
            if overwrite is not Overwrite.ALWAYS:
                raise EntryError(
                    "not restored: something that is not a directory is in the way "
                    "(--overwrite always replaces it)"
                )
            os.unlink(name, dir_fd=parent_fd)  # the symlink or file itself, never what it points to
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            fresh = True
    return os.open(name, DIR_FLAGS, dir_fd=parent_fd), fresh


def discard(dir_fd: int, tmp: bytes) -> None:
    try:
        os.unlink(tmp, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def create_file(
    dir_fd: int, mode: int, new_tmp: Callable[[], bytes], *, unnamed: bool = True
) -> tuple[int, bytes]:
    """A new file in the directory: (its descriptor, b"") when it is unnamed (`unnamed` and the
    filesystem has O_TMPFILE), else (its descriptor, the temporary name `new_tmp` gave it)."""
    fd = create_unnamed(dir_fd, mode) if unnamed else None
    if fd is not None:
        return fd, b""
    tmp = new_tmp()
    return os.open(tmp, FILE_FLAGS, mode, dir_fd=dir_fd), tmp


def made_by_worker(here: TargetDir, name: bytes) -> bool:
    """Whether a file a restore worker was to make (restore_workers.py) is under its name after the
    worker ended: its directory is one this restore made (nothing else is in it), and a worker names
    a file only once it is whole (written, its times set, read back when verifying)."""
    try:
        os.stat(name, dir_fd=here.fd, follow_symlinks=False)
    except OSError:
        return False
    return True


class EntryWriter:
    """Decides whether an entry is restored, lays down what has no content, and keeps the record."""

    def __init__(
        self, root: TargetDir, stats: RestoreStats, *, overwrite: Overwrite, numeric_owner: bool
    ) -> None:
        self.root = root
        self.stats = stats
        self.overwrite = overwrite
        self.numeric_owner = numeric_owner
        self._tmp_counter = itertools.count()
        self._umask = process_umask()
        # files are made unnamed and linked once finished (unnamed_files.py; /proc/self/fd where the
        # kernel does not name a descriptor itself)
        self.tmpfile = os.path.isdir("/proc/self/fd")
        self._tmp_prefix = TMP_PREFIX + b"%d-" % os.getpid()
        self._euid = os.geteuid()

    def error(self, path: bytes, why: str) -> None:
        log.debug("%s: %s", display_name(path), why)  # in the result: the caller says it
        with self.stats.lock:
            self.stats.errors.append((path, why))

    def warning(self, path: bytes, why: str) -> None:
        with self.stats.lock:
            self.stats.warnings.append((path, why))

    def restored(self, node: Node, here: TargetDir) -> Restored:
        """Count an entry made under its final name; its names below the target."""
        with self.stats.lock:
            if node.type == "file":
                self.stats.files += 1
                self.stats.total_bytes += node.size
            else:
                self.stats.others += 1
        return (*here.rel, node.name)

    def wanted(self, node: Node, spath: bytes, here: TargetDir) -> bool:
        """Whether the entry is to be laid down: it was readable at backup, and what is in the way may
        be replaced. A skipped entry is counted; an unreadable one is reported, a kept one named."""
        assert here.fd is not None
        if node.error is not None:
            self.warning(spath, f"not restored: {entry_error(node.error)}")
            with self.stats.lock:
                self.stats.skipped += 1
            return False
        kept = None if here.fresh else self._kept_because(here.fd, node)
        if kept is not None:
            with self.stats.lock:
                self.stats.kept.append((spath, kept))
            return False
        return True

    def new_tmp(self) -> bytes:
        return self._tmp_prefix + b"%d" % next(self._tmp_counter)

    def _kept_because(self, dir_fd: int, node: Node) -> str | None:
        """Why what is in the target under the entry's name is kept; None when it may be replaced."""
        try:
            st = os.stat(node.name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            if self.overwrite is Overwrite.NEVER:
                return KEPT_REASONS[Overwrite.NEVER]
            raise EntryError("not restored: a directory is in the way (it is never replaced by a file)")
        if self.overwrite is Overwrite.ALWAYS:
            return None
        if self.overwrite is Overwrite.IF_NEWER and node.mtime_ns > st.st_mtime_ns:
            return None
        return KEPT_REASONS[self.overwrite]

    def link(self, first: tuple[bytes, ...], here: TargetDir, tmp: bytes, node: Node) -> None:
        """Hard-link `tmp` to the entry this restore made at `first`, walking to it without symlinks;
        what is linked must be of `node`'s type (what is under `first` now is the target's, and the
        target is not trusted either)."""
        assert here.fd is not None and self.root.fd is not None
        *dirs, name = first
        if tuple(dirs) == here.rel:
            os.link(name, tmp, src_dir_fd=here.fd, dst_dir_fd=here.fd, follow_symlinks=False)
        else:
            fd = os.dup(self.root.fd)
            try:
                for part in dirs:
                    inner = os.open(part, os.O_PATH | DIR_FLAGS, dir_fd=fd)
                    os.close(fd)
                    fd = inner
                os.link(name, tmp, src_dir_fd=fd, dst_dir_fd=here.fd, follow_symlinks=False)
            finally:
                os.close(fd)
        if not is_of_type(os.stat(tmp, dir_fd=here.fd, follow_symlinks=False), node):
            raise EntryError(f"not restored: what it is hard-linked to is not a {node.type} in the target")

    def make_special(self, node: Node, here: TargetDir, tmp: bytes) -> None:
        """A symlink, FIFO, socket or device node under `tmp`, with its metadata."""
        assert here.fd is not None
        kind = node.type
        if kind == "symlink":
            if node.link_target is None:
                raise EntryError("a symlink without a target in the snapshot")
            os.symlink(node.link_target, tmp, dir_fd=here.fd)
        elif kind == "fifo":
            os.mkfifo(tmp, 0o600, dir_fd=here.fd)
        elif kind in ("chardev", "blockdev", "socket"):
            os.mknod(tmp, 0o600 | metadata.type_bits(kind), device_number(node), dir_fd=here.fd)
        else:
            raise EntryError(f"unknown entry type {kind!r}")
        metadata.apply_at(
            here.fd,
            tmp,
            node,
            numeric_owner=self.numeric_owner,
            clear_inherited_acl=here.inherits_acl,
            label=join(here.spath, node.name),
        )

    def create_mode(self, node: Node, here: TargetDir) -> tuple[int, bool]:
        """The mode to create a file with, and whether creating gives it all its metadata but times
        (owner as created, plain permission bits the umask keeps, no xattrs, no ACL to inherit): then
        `finish_file` only sets times. Else 0o600, and `finish_file` applies everything.

        A file created with its own mode holds nothing it will not hold under its name: its
        content, owner and permissions are the final ones, only being written."""
        mode = node.mode & 0o777
        if (
            node.xattrs
            or here.inherits_acl
            or here.new_gid < 0
            or self._umask is None
            or node.mode != mode
            or mode & self._umask
            or metadata.resolve_owner(node, numeric_owner=self.numeric_owner) != (self._euid, here.new_gid)
        ):
            return 0o600, False
        return mode, True

    def finish_file(self, fd: int, node: Node, here: TargetDir, *, complete: bool = False) -> None:
        """Give a written file its metadata through its own descriptor (only its times when it was
        created `complete`: see `create_mode`)."""
        if complete:
            os.utime(fd, ns=(node.atime_ns, node.mtime_ns))
            return
        metadata.apply_fd(
            fd,
            node,
            numeric_owner=self.numeric_owner,
            clear_inherited_acl=here.inherits_acl,
            label=join(here.spath, node.name),
        )


def device_number(node: Node) -> int:
    """The device number to make a device node with: one the kernel can hold (major below 2^12, minor
    below 2^20), and never a default for a device node the snapshot gives none (0,0 is no device)."""
    if node.type == "socket":
        return 0
    if node.rdev is None:
        raise EntryError("a device node without its device number in the snapshot")
    major, minor = os.major(node.rdev), os.minor(node.rdev)
    if major >= 1 << 12 or minor >= 1 << 20:
        raise EntryError(f"device number {major},{minor} is beyond what Linux holds")
    return node.rdev
