"""The target's directories as a restore holds them: opened on first use, given their metadata last.

A directory is made and opened when the walk first selects it or anything below it (its parents
first), relative to its parent with O_NOFOLLOW; at most MAX_OPEN_DIRS are held open at once, and
past that, opening one waits for the oldest. The walk leaves a directory long before its
entries are restored: its job (`DirJob`) holds their futures, and once they are done the directory
gets its metadata and is closed, in the order the walk left them (post-order: a read-only directory
is filled first, and a default ACL is applied after the files were created with their own ACLs).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from shadowvault.archive import metadata
from shadowvault.archive.restore_entries import (
    EntryError,
    EntryWriter,
    Overwrite,
    TargetDir,
    created_gid,
    has_default_acl,
    open_subdir,
    reason,
)
from shadowvault.archive.restore_outcomes import Pending
from shadowvault.cancellation import check

MAX_OPEN_DIRS = 128  # directory descriptors held at once (besides the ones on the walk's own path)


@dataclass
class DirJob:
    """A directory's entries being restored by the workers: its metadata waits for all of them."""

    dir: TargetDir
    entries: list[tuple[Pending, bytes]] = field(default_factory=list)  # (future, snapshot path)

    def ready(self) -> bool:
        return all(f.done() for f, _ in self.entries)


class OpenDirs:
    """The target's directories this restore holds open, and the jobs of those the walk left, in
    post-order (main thread only)."""

    def __init__(
        self, root: TargetDir, entries: EntryWriter, overwrite: Overwrite, flush: Callable[[], None]
    ) -> None:
        self.root = root  # the target itself: left as it is
        self.entries = entries
        self.stats = entries.stats
        self.overwrite = overwrite
        self.flush = flush  # hands the work being planned to the pool: a wait then waits for work under way
        self.open: set[TargetDir] = set()  # directories whose descriptor is open
        self.finished: collections.deque[DirJob] = collections.deque()

    def ensure(self, here: TargetDir) -> bool:
        """Make and open `here` (and its parents) on first use; False when it cannot be (reported once)."""
        missing: list[TargetDir] = []
        walk: TargetDir | None = here
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

    def _open_dir(self, here: TargetDir) -> bool:
        assert here.parent is not None and here.parent.fd is not None
        if len(self.open) >= MAX_OPEN_DIRS and self.finished:
            self.flush()  # the oldest directory may wait for files of the batch being planned
        while len(self.open) >= MAX_OPEN_DIRS and self.finished:
            self._finish(self.finished.popleft())  # wait for the oldest directory, close it
        try:
            here.fd, here.fresh = open_subdir(here.parent.fd, here.name, self.overwrite, here.parent.fresh)
        except (OSError, EntryError) as err:
            self.entries.error(here.spath, reason(err))
            return False
        self.open.add(here)
        here.inherits_acl = has_default_acl(here.fd)
        here.new_gid = created_gid(here.fd)
        with self.stats.lock:
            self.stats.dirs += 1
        return True

    def close(self, here: TargetDir) -> None:
        if here.fd is not None:
            os.close(here.fd)
            here.fd = None
        self.open.discard(here)

    def drain(self, *, block: bool) -> None:
        """Apply directory metadata once everything inside a directory is done, in post-order."""
        if block:
            self.flush()
        while self.finished and (block or self.finished[0].ready()):
            self._finish(self.finished.popleft())

    def _finish(self, job: DirJob) -> None:
        """Wait for a directory's entries, record any failure they did not, give it its metadata,
        close it (cancelled: none, the restore unwinds as an interrupted one)."""
        check(self.stats.cancellation)
        for fut, spath in job.entries:
            err = fut.exception()
            if err is not None:  # entries record their own errors; this is the net under them
                self.entries.error(spath, reason(err))
        here = job.dir
        if here.fd is None or here is self.root:
            return
        try:
            if here.node is not None:
                metadata.apply_fd(
                    here.fd, here.node, numeric_owner=self.entries.numeric_owner, label=here.spath
                )
        except Exception as err:
            self.entries.error(here.spath, f"metadata not restored: {reason(err)}")
        finally:
            self.close(here)
