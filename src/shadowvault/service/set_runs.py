"""The daemon's sets that are still running: made for a requester that reads them, then completes.

A non-persistent set made through the API is kept here with its coordinator run (its writers and
their state) until the requester says how its backup went (`complete`): every writer then gets
backup_complete(succeeded) and the set is released, as `shadow_set()` does in process. A requester
that goes away without saying so (its connection closed) failed: backup_complete(False). Persistent
sets are made and kept like `shadows create` makes them (the writers stable, no backup to wait for).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from shadowvault.errors import NotFoundError
from shadowvault.shadow.coordinator import ShadowSetRun, create_shadow_set
from shadowvault.shadow.manifest import ShadowSetManifest
from shadowvault.shadow.options import SetOptions
from shadowvault.shadow.store import ShadowStore


class SetRuns:
    """The running sets by id; thread-safe (the handlers call it from worker threads)."""

    def __init__(self) -> None:
        self._runs: dict[str, ShadowSetRun] = {}
        self._lock = threading.Lock()

    def make(self, volumes: Sequence[str], options: SetOptions) -> ShadowSetManifest:
        """Make a set for `options.requester_uid` (the machine's set locks serialize sets that share
        anything)."""
        if options.persistent:
            return create_shadow_set(list(volumes), options)
        run = ShadowSetRun(volumes, options)
        manifest = run.create()
        with self._lock:
            self._runs[manifest.id] = run
        return manifest

    def _take(self, set_id: str) -> ShadowSetRun | None:
        with self._lock:
            return self._runs.pop(set_id, None)

    def complete(self, set_id: str, succeeded: bool) -> ShadowSetManifest:
        """backup_complete(succeeded) for every writer of the set, and its release; its last manifest."""
        run = self._take(set_id)
        if run is None or run.manifest is None:
            raise NotFoundError(f"shadow set {set_id} is not waiting for a backup to complete")
        run.complete(succeeded)
        return run.manifest

    def release(self, set_id: str) -> None:
        """Release a set by full id; a running one first tells its writers the backup failed."""
        run = self._take(set_id)
        if run is not None:
            run.complete(False)
        else:
            ShadowStore().release(set_id)
