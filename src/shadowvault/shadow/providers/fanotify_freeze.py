"""The freeze of the fanotify provider's instant, when the shadow set froze nothing itself.

The index must be finished while nothing changes the volume (FreezePolicy.NEEDS). With `--writer
fsfreeze` the set has frozen it already (FIFREEZE then answers EBUSY, and the set thaws it); without,
the listener freezes it for the few moments of its index and thaws it itself. The provider, which
holds its own descriptor of the volume, thaws it too if the listener dies or is cancelled meanwhile.
"""

from __future__ import annotations

import errno
import fcntl
import os

from shadowvault.shadow.freeze_ioctl import FIFREEZE, FITHAW


def freeze_unless_frozen(mount_point: str) -> int | None:
    """Freeze the volume unless it is frozen already; our descriptor (to thaw with) if we froze it."""
    fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, FIFREEZE, 0)
    except OSError as err:
        os.close(fd)
        if err.errno == errno.EBUSY:
            return None
        raise
    return fd


def thaw(fd: int) -> None:
    """Thaw the volume of `fd` and close it; harmless when it is not frozen any more."""
    try:
        fcntl.ioctl(fd, FITHAW, 0)
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)
