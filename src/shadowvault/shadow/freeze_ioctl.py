"""FIFREEZE and FITHAW: their numbers, and the thaw of every filesystem one freezer holds.

The fsfreeze writer, the lvm provider's freeze of a whole set, the fanotify provider's own freeze and
the watchdog all freeze or thaw through these ioctls on a descriptor of the mount point.
"""

from __future__ import annotations

import errno
import fcntl

FIFREEZE = 0xC0045877  # _IOWR('X', 119, int)
FITHAW = 0xC0045878  # _IOWR('X', 120, int)


def thaw_each(frozen: list[str], fds: dict[str, int]) -> list[str]:
    """FITHAW every mount point of `frozen` (emptied, last frozen first) through its descriptor in
    `fds`; the problems, in words. EINVAL means not frozen: the watchdog thawed it already."""
    problems = []
    while frozen:
        mount_point = frozen.pop()
        try:
            fcntl.ioctl(fds[mount_point], FITHAW, 0)
        except OSError as err:
            if err.errno != errno.EINVAL:
                problems.append(f"{mount_point}: {err.strerror}")
    return problems
