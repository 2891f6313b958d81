"""One filesystem freeze over several logical volumes, for the lvm provider's multi-volume sets.

Each lvcreate suspends its origin, and the suspend freezes the filesystem on it: alone, each snapshot
is of its own instant. To take a set's snapshots at one instant, the provider freezes every
filesystem first (FIFREEZE), runs the lvcreates, and thaws them all. That needs a kernel whose
device-mapper suspend nests inside a userspace freeze (Linux 6.8, freeze holders): on older ones
(Debian 12's 6.1) the suspend fails with EBUSY and leaves a half-made snapshot that LVM says needs
manual intervention, so the kernel release is read rather than tried (docs/lvm-provider.md).

The freeze is held by the commit's worker thread, which writes nothing to these filesystems, and a
watchdog process thaws them if this process dies while they are frozen; `thaw` may come from any
thread (the coordinator's abort) and is harmless twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
from collections.abc import Sequence

from shadowvault.errors import ProviderError
from shadowvault.shadow.freeze_ioctl import FIFREEZE, thaw_each
from shadowvault.shadow.watchdog import Watchdog, WatchdogStartError
from shadowvault.shadow.watchdog_actions import ThawFilesystem

log = logging.getLogger(__name__)

NESTING_KERNEL = (6, 8)  # the first Linux whose block-device freeze nests in a userspace one
WATCHDOG_SLACK = 60.0  # past the caller's limit before the watchdog thaws on its own


def kernel_nests_freezes(release: str | None = None) -> bool:
    """Whether this kernel (or `release`, as `uname -r` prints it) lets lvcreate snapshot a frozen fs."""
    match = re.match(r"(\d+)\.(\d+)", release if release is not None else os.uname().release)
    return match is not None and (int(match[1]), int(match[2])) >= NESTING_KERNEL


class GroupFreeze:
    """FIFREEZE on several mount points, thawed together; a watchdog thaws them if we die."""

    def __init__(self, mount_points: Sequence[str]) -> None:
        self.mount_points = list(mount_points)
        self._fds: dict[str, int] = {}
        self._frozen: list[str] = []
        self._lock = threading.Lock()
        self._thawed = False
        self._watchdog: Watchdog | None = None

    def freeze(self, limit: float) -> None:
        """Freeze every mount point (the watchdog thaws them `limit` s on at the latest)."""
        for mp in self.mount_points:
            self._fds[mp] = os.open(mp, os.O_RDONLY | os.O_DIRECTORY)
        actions = [ThawFilesystem(path=mp) for mp in self.mount_points]
        try:
            self._watchdog = Watchdog.start(actions, time.monotonic() + limit + WATCHDOG_SLACK)
        except WatchdogStartError as err:
            self.thaw()
            raise ProviderError(f"cannot freeze the set's volumes without a watchdog: {err}") from err
        for mp in self.mount_points:
            with self._lock:
                if self._thawed:
                    raise ProviderError("cancelled before every volume of the set was frozen")
                try:
                    fcntl.ioctl(self._fds[mp], FIFREEZE, 0)
                except OSError as err:
                    self._thaw_locked()
                    why = err.strerror
                    raise ProviderError(f"cannot freeze {mp} for the set's snapshots: {why}") from err
                self._frozen.append(mp)

    @property
    def cancelled(self) -> bool:
        return self._thawed

    def thaw(self) -> list[str]:
        """Thaw what was frozen and close everything; the problems, in words (empty: all thawed)."""
        with self._lock:
            return self._thaw_locked()

    def _thaw_locked(self) -> list[str]:
        if self._thawed:
            return []
        self._thawed = True
        problems = thaw_each(self._frozen, self._fds)
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._watchdog is not None:
            if problems:
                self._watchdog.fire()
            else:
                self._watchdog.thawed()
            self._watchdog = None
        for problem in problems:
            log.warning("cannot thaw %s", problem)
        return problems
