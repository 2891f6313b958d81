"""The fsfreeze writer: FIFREEZE/FITHAW on whole filesystems.

A frozen filesystem flushes its dirty data and journal and blocks every modifying call (in D
state) until thaw; it stays frozen if the freezer dies, so the watchdog gets a ThawFilesystem
action for every volume. Some filesystems must never be frozen by us: the root, and the ones
holding our state, configuration, interpreter or log, because our own next write would deadlock.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading

from shadowvault.errors import PermissionDeniedError, UsageError, WriterError
from shadowvault.shadow.freeze_ioctl import FIFREEZE, thaw_each
from shadowvault.shadow.freeze_rules import check_may_freeze
from shadowvault.shadow.manifest import Component, RestoreMethod
from shadowvault.shadow.volumes import Volume, find_volume, list_volumes
from shadowvault.shadow.writers.base import SnapshotContext, ThawFilesystem, WatchdogAction, Writer

log = logging.getLogger(__name__)


def require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionDeniedError(
            "freezing a filesystem needs root (CAP_SYS_ADMIN); run as root or leave out --writer fsfreeze"
        )


class FsfreezeWriter(Writer):
    """Freezes the volumes of the set (instance = one mount point; none = every volume of the set)."""

    name = "fsfreeze"
    freezes_filesystems = True  # the coordinator freezes this writer after the application writers

    def __init__(self, instance: str | None = None, **options) -> None:
        super().__init__(instance, **options)
        self._targets: list[Volume] = []
        self._fds: dict[str, int] = {}
        self._frozen: list[str] = []
        self._lock = threading.Lock()  # freeze runs in one thread, abort may come from another
        self._aborted = False
        self._in_flight = False  # a FIFREEZE is running: its descriptor must stay open
        if instance:
            self._targets = [find_volume(instance)]

    def identify(self) -> list[Component]:
        return [
            Component(
                name=f"filesystem {v.mount_point}",
                writer=self.name,
                instance=self.instance,
                kind="filesystem",
                paths=[v.mount_point],
                selectable=False,
                restore_method=RestoreMethod.RESTORE_IF_CAN_REPLACE,
            )
            for v in self._targets
        ]

    def prepare_backup(self, ctx: SnapshotContext) -> None:
        in_set = {v.mount_point: v for v in ctx.volumes}
        if self.instance:
            target = self._targets[0]
            if target.mount_point not in in_set:
                raise UsageError(
                    f"fsfreeze:{self.instance}: {target.mount_point} is not a volume of this shadow set"
                )
        else:
            self._targets = list(ctx.volumes)
        require_root()
        all_volumes = list_volumes(with_uuid=False)
        for volume in self._targets:
            check_may_freeze(volume, all_volumes)

    def prepare_snapshot(self, ctx: SnapshotContext) -> None:
        # Open the descriptors now: opening is a read, but nothing should touch a frozen fs needlessly.
        for volume in self._targets:
            if volume.mount_point not in self._fds:
                self._fds[volume.mount_point] = os.open(volume.mount_point, os.O_RDONLY | os.O_DIRECTORY)

    def watchdog_actions(self) -> list[WatchdogAction]:
        return [ThawFilesystem(path=v.mount_point) for v in self._targets]

    def freeze(self, ctx: SnapshotContext) -> None:
        self.prepare_snapshot(ctx)
        for volume in self._targets:
            mp = volume.mount_point
            with self._lock:
                if self._aborted:
                    raise WriterError("aborted before freezing")
                self._in_flight = True
                fd = self._fds[mp]
            try:
                fcntl.ioctl(fd, FIFREEZE, 0)
            except OSError as err:
                with self._lock:
                    self._in_flight = False
                    if self._aborted:
                        self._close()
                if err.errno == errno.EBUSY:
                    raise WriterError(f"{mp} is already frozen by someone else") from err
                if err.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
                    raise WriterError(f"{mp} ({volume.fstype}) cannot be frozen") from err
                if err.errno == errno.EPERM:
                    raise PermissionDeniedError(f"freezing {mp} needs root (CAP_SYS_ADMIN)") from err
                raise WriterError(f"cannot freeze {mp}: {err.strerror}") from err
            with self._lock:
                self._in_flight = False
                self._frozen.append(mp)
                if self._aborted:  # the set was abandoned while we froze: undo it at once
                    self._thaw_frozen()
                    raise WriterError(f"aborted while freezing {mp}; thawed it again")

    def thaw(self, ctx: SnapshotContext) -> None:
        with self._lock:
            problems = self._thaw_frozen()
        if problems:
            raise WriterError("thaw failed on " + "; ".join(problems))

    def abort(self, ctx: SnapshotContext) -> None:
        with self._lock:
            self._aborted = True
            problems = self._thaw_frozen()
        if problems:
            raise WriterError("thaw failed on " + "; ".join(problems))

    def _thaw_frozen(self) -> list[str]:
        """FITHAW every volume we froze (caller holds the lock); the problems, in words."""
        problems = thaw_each(self._frozen, self._fds)
        self._close()
        return problems

    def backup_complete(self, ctx: SnapshotContext, succeeded: bool) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._frozen or self._in_flight:
            return
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
