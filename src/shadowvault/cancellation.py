"""Cancelling a running backup or restore from another thread (the daemon's `DELETE /v1/runs/ID`).

The walk and the restore look at their Cancellation before every entry, and the work under way
looks at it between the pieces of a file: a backup before each chunk it cuts, a restore before
each blob it writes and each task it gives a worker process. Either raises JobCancelledError there,
so a cancelled job unwinds like an interrupted one: the shadow set is completed as failed and
released, the repository keeps only whole packs, a restore leaves no half-written file under a
final name. A look is one `Event.is_set()`: nothing measurable next to a chunk or a blob.

Work that cannot be handed a Cancellation through its arguments finds it in `current()`: the
run's thread opens a `scope`, and the coordinator lends it to the writer events that may be cut
short (events.py), never to a thaw or an abort. That is how a cancel reaches what the jobs call
deep below them without a parameter on every layer: an external command (proc.py terminates it),
QEMU's copy jobs (vm/copy_jobs.py), an external writer's answer, a disk image being written, a
database writer's SQL statement (`interrupting`: the statement is cancelled on its server).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from shadowvault.errors import JobCancelledError

log = logging.getLogger(__name__)

WATCH_POLL = 0.2  # seconds an interrupt watcher may linger after its call has ended


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


_current: ContextVar[Cancellation | None] = ContextVar("shadowvault_cancellation", default=None)


@contextlib.contextmanager
def scope(cancellation: Cancellation) -> Iterator[Cancellation]:
    """Make `cancellation` the one `current()` returns inside the block (in this thread only)."""
    token = _current.set(cancellation)
    try:
        yield cancellation
    finally:
        _current.reset(token)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """No Cancellation inside the block: work that must not stop halfway (an application stopped or
    started for a restore, a restore's plan applied) runs to its end; the run stops after it."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> Cancellation | None:
    """The Cancellation of the run this code works for; None outside a run (a command line's work)."""
    return _current.get()


def pending() -> Cancellation | None:
    """The current Cancellation while it has not been cancelled: what work starting now stops for.

    Once cancelled, the run is unwinding, and what it starts then (a snapshot deleted, a filesystem
    unmounted, an on_failure hook) is its cleanup: that must run to its end, so it watches nothing.
    """
    cancellation = _current.get()
    return cancellation if cancellation is not None and not cancellation.cancelled else None


class _Interrupter:
    """A watcher thread that calls `interrupt` once `watch` is cancelled, unless the call ended first."""

    def __init__(self, watch: Cancellation, interrupt: Callable[[], None]) -> None:
        self._watch = watch
        self._interrupt = interrupt
        self._lock = threading.Lock()
        self._ended = False
        self.sent = False
        threading.Thread(target=self._run, name="interrupter", daemon=True).start()

    def _run(self) -> None:
        while not self._watch._event.wait(WATCH_POLL):
            if self._ended:
                return
        with self._lock:
            if self._ended:
                return
            self.sent = True
            try:
                self._interrupt()
            except Exception as err:  # the call then runs to its own end or timeout; abort still releases
                log.warning("could not interrupt a call of a cancelled run: %s", err)

    def end(self) -> None:
        """The call has ended: no interrupt from now on (one under way is waited for)."""
        with self._lock:
            self._ended = True


@contextlib.contextmanager
def interrupting(interrupt: Callable[[], None]) -> Iterator[None]:
    """Let a cancel reach a call that blocks in another party (a SQL statement waiting on its server).

    While the block runs, a cancel of the current run calls `interrupt` from a watcher thread (it
    asks the other party to end the call: cancel the statement on the server), and the failure the
    block then ends with is raised as JobCancelledError. The block ends only once an interrupt under
    way has returned, so an interrupt never reaches what the thread does next. Outside a run, or
    once it is cancelled (then the call is its cleanup), the block runs as it is.
    """
    watch = pending()
    if watch is None:
        yield
        return
    interrupter = _Interrupter(watch, interrupt)
    try:
        yield
    except Exception as err:
        interrupter.end()
        if interrupter.sent:
            raise JobCancelledError(watch.reason) from err
        raise
    finally:
        interrupter.end()
