"""Moving what a restore replaces out of the way: renamed to `NAME.pre-restore-TIME`, never deleted.

Files the application made after the backup (newer WAL or binlogs, new tables, a -wal of SQLite)
must not mix with the restored ones, and whoever restores must be able to go back: so what is there
is renamed beside itself, and the restore says where it went (`RestoreContext.moved_aside`), also
when it stops half-way.
"""

from __future__ import annotations

import logging
import os
import time

from shadowvault.shadow.writers.base import RestoreContext

log = logging.getLogger(__name__)


def aside_name(path: str) -> str:
    """A free `PATH.pre-restore-TIME[-N]`: two restores in one second must not overwrite the first's."""
    base = f"{path.rstrip('/')}.pre-restore-{time.strftime('%Y%m%dT%H%M%S')}"
    name, n = base, 1
    while os.path.lexists(name):
        n += 1
        name = f"{base}-{n}"
    return name


def set_aside(path: str, ctx: RestoreContext | None = None) -> str | None:
    """Move `path` out of the way (renamed, never deleted); returns the new name, None when nothing
    was there (or an empty directory). A directory is replaced by an empty one with the same owner
    and mode. The move is recorded in `ctx.moved_aside`."""
    if not os.path.lexists(path) or (os.path.isdir(path) and not os.listdir(path)):
        return None
    st = os.lstat(path)
    aside = aside_name(path)
    os.rename(path, aside)
    if os.path.isdir(aside) and not os.path.islink(aside):
        os.mkdir(path, 0o700)
        os.chown(path, st.st_uid, st.st_gid)
        os.chmod(path, st.st_mode & 0o7777)
    log.warning("%s was moved to %s before the restore", path, aside)
    if ctx is not None:
        ctx.moved_aside[path] = aside
    return aside
