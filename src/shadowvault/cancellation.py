"""Cancelling a running backup or restore from another thread (the daemon's `DELETE /v1/runs/ID`).

The walk and the restore look at their Cancellation between entries and stop there by raising
JobCancelledError, so a cancelled job unwinds like an interrupted one: the shadow set is completed
as failed and released, the repository keeps only whole packs, a restore leaves no half-written
file under a final name.
"""

from __future__ import annotations

import threading

from shadowvault.errors import JobCancelledError


class Cancellation:
    """A flag a job checks between entries; set once, by whoever cancels."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "cancelled"

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise JobCancelledError if the job was cancelled."""
        if self._event.is_set():
            raise JobCancelledError(self.reason)
