"""The machine-wide coordinator lock: one shadow set is made at a time, by the daemon or in process.

`<state dir>/coordinator.lock` is flock()ed for the whole making of a set (identify to
post_snapshot), so two requesters never freeze one volume at once, whether both are the daemon's
requests, both CLI runs, or one of each. Re-entrant within a process (store_lock), and a forked
watchdog does not inherit it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from shadowvault import paths
from shadowvault.errors import PermissionDeniedError
from shadowvault.shadow.store_lock import lock_for

LOCK_FILE = "coordinator.lock"


@contextlib.contextmanager
def coordinator_lock() -> Iterator[None]:
    """Hold the machine's coordinator lock (waits for another requester's set to be made)."""
    directory = paths.state_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except PermissionError as err:
        raise PermissionDeniedError(f"cannot create the state directory {directory}: {err.strerror}") from err
    with lock_for(directory / LOCK_FILE):
        yield
