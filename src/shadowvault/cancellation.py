"""Cancelling a running backup or restore from another thread (the daemon's `DELETE /v1/runs/ID`).

The walk and the restore look at their Cancellation before every entry, and the work under way
looks at it between the pieces of a file: a backup before each chunk it cuts, a restore before
each blob it writes and each task it gives a worker process. Either raises JobCancelledError there,
so a cancelled job unwinds like an interrupted one: the shadow set is completed as failed and
released, the repository keeps only whole packs, a restore leaves no half-written file under a
final name. A look is one `Event.is_set()`: nothing measurable next to a chunk or a blob.
"""

from __future__ import annotations

import threading

from shadowvault.errors import JobCancelledError


class Cancellation:
    """A flag a job checks between entries and blobs; set once, by whoever cancels."""

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


def check(cancellation: Cancellation | None) -> None:
    """Raise JobCancelledError if there is a cancellation and it was cancelled (work that nobody
    can cancel, a command line's, has None)."""
    if cancellation is not None and cancellation._event.is_set():
        raise JobCancelledError(cancellation.reason)
