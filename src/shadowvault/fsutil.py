"""Small filesystem helpers shared by every layer: atomic writes that survive a crash, reads of
files that must be regular files."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


class NotRegularFile(OSError):
    """What was to be read is a FIFO, a device, a socket or a directory, not a file."""


def open_regular(path: str | bytes | os.PathLike[str], *, follow_symlinks: bool = True) -> int:
    """A descriptor for reading `path` when it is a regular file; NotRegularFile else (and with
    `follow_symlinks` False, ELOOP for a symlink). Opened without blocking: a FIFO put where a file
    belongs (in a repository, whose content is untrusted) would block a plain open until something
    wrote to it, for ever."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(f"{os.fsdecode(path)} is not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or create inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, durable: bool = True
) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one.

    The data goes to a temporary file in the same directory, is fsynced, renamed over the final
    name, and the directory is fsynced: an interrupted write leaves nothing under the final name.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_dir(target.parent)


@contextlib.contextmanager
def nameless_file(data: bytes) -> Iterator[str]:
    """`data` in a file that has no name (O_TMPFILE in the temporary directory), as a path that this
    process and the commands it runs can open: it is gone when this process ends, even killed, so
    that a secret written for a command (a DC's backup archive) is never left behind in /tmp. Where
    that directory's filesystem has no O_TMPFILE, the file is an anonymous memory file instead."""
    try:
        fd = os.open(tempfile.gettempdir(), os.O_TMPFILE | os.O_RDWR, 0o600)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        fd = os.memfd_create("shadowvault-nameless", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        yield f"/proc/{os.getpid()}/fd/{fd}"
    finally:
        os.close(fd)
