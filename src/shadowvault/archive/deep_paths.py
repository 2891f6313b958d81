"""Paths past PATH_MAX: a walk continues below an open directory, through /proc/self/fd/N/.

System calls get an access path, which is the read path itself until it grows past
`ANCHOR_AFTER` bytes; there the walk opens the directory and continues below
/proc/self/fd/N/..., so a tree of any depth is read whole (one descriptor per 3 KiB of depth).
A directory's descriptor stays open until everything below it is done.
"""

from __future__ import annotations

import os

# an access path longer than this is re-anchored on an open directory: the path of any entry below it
# (plus a name of up to 255 bytes) stays under PATH_MAX (4096)
ANCHOR_AFTER = 3072
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Anchors:
    """The directories a walk holds open to reach deep entries (main thread only)."""

    def __init__(self) -> None:
        self._open: set[int] = set()

    def reach(self, access: bytes) -> tuple[bytes, int | None]:
        """The path to use for `access` and the descriptor opened for it (None when short enough)."""
        if len(access) <= ANCHOR_AFTER:
            return access, None
        fd = os.open(access, DIR_FLAGS)
        self._open.add(fd)
        return b"/proc/self/fd/%d" % fd, fd

    def release(self, fd: int) -> None:
        """Nothing reaches through `fd` any more."""
        self._open.discard(fd)
        os.close(fd)

    def close_all(self) -> None:
        """Left open only when the walk was interrupted."""
        for fd in self._open:
            os.close(fd)
        self._open.clear()
