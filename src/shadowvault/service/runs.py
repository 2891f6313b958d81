"""Backups, restores and jobs.d jobs the daemon runs for its requesters: each a Run with its events.

A Run runs in a thread of its own pool (RUN_THREADS at once; more wait their turn, `queued`), emits
JSON events (restic's convention: every event has a `message_type`: `status` every second while it
runs, then one `summary` or `error`), can be cancelled (a queued run ends at once, a running one
is `cancelling` until its work has unwound: its Cancellation is the `current` one of everything it
calls, external commands and writers included), and is kept after it ends (the last KEPT_RUNS) so
that its result can be read. Events are kept in full up to MAX_EVENTS per run; past
that the oldest status events are dropped (the summary is never dropped).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from shadowvault import cancellation
from shadowvault.archive.memory import bound_heap
from shadowvault.cancellation import Cancellation
from shadowvault.errors import JobCancelledError, NotFoundError, ShadowvaultError

log = logging.getLogger(__name__)

RUN_THREADS = 2
KEPT_RUNS = 100
MAX_EVENTS = 1000
STATUS_INTERVAL = 1.0

QUEUED, RUNNING, CANCELLING = "queued", "running", "cancelling"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
STATES = (QUEUED, RUNNING, CANCELLING, *FINISHED)


@dataclass
class Run:
    """One backup, restore or job run: what it is, who asked, how it goes, and its events."""

    id: str
    kind: str  # backup | restore | job
    requester_uid: int
    description: str
    state: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    error_kind: str | None = None
    exit_status: int | None = None
    cancellation: Cancellation = field(default_factory=Cancellation)
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    event_count: int = 0  # every event ever emitted: a stream's position
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def emit(self, message_type: str, data: dict[str, Any] | None = None, **fields: Any) -> None:
        event = {**(data or {}), **fields, "message_type": message_type, "run_id": self.id}
        with self.lock:
            self.events.append(event)
            self.event_count += 1

    def events_since(self, position: int) -> tuple[list[dict[str, Any]], int]:
        """The events after `position` that are still kept, and the new position."""
        with self.lock:
            kept_from = self.event_count - len(self.events)
            start = max(position - kept_from, 0)
            return list(self.events)[start:], self.event_count

    def report(self) -> dict[str, Any]:
        """The run as GET /v1/runs/ID shows it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "description": self.description,
            "requester_uid": self.requester_uid,
            "state": self.state,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "exit_status": self.exit_status,
            "result": self.result,
            "error": self.error,
            "error_kind": self.error_kind,
        }


# What a run does: given the run (its cancellation) and a callback that reports its counters,
# the work returns the summary (a dict) and an exit status (0, 3 for a partial failure).
Work = Callable[[Run, Callable[[Callable[[], dict[str, Any]]], None]], tuple[dict[str, Any], int]]


class StoppingError(ShadowvaultError):
    """The daemon is stopping: it starts no run (the daemon answers 503)."""


class Runs:
    """The daemon's runs: start, find, cancel; a thread pool of their own."""

    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(RUN_THREADS, thread_name_prefix="sv-run")
        self._ids = itertools.count(1)
        self._stopping: str | None = None  # why no run starts any more (cancel_all's reason)

    def start(self, kind: str, requester_uid: int, description: str, work: Work) -> Run:
        run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{kind}-{next(self._ids)}"
        run = Run(id=run_id, kind=kind, requester_uid=requester_uid, description=description)
        with self._lock:
            if self._stopping is not None:  # a request that was under way as the daemon began to stop
                raise StoppingError(f"no {kind} was started: {self._stopping}")
            self._runs[run.id] = run
            self._forget_old()
        run.emit("queued", kind=kind, description=description)
        self._pool.submit(self._execute, run, work)
        return run

    def _forget_old(self) -> None:
        finished = [r for r in self._runs.values() if r.state in FINISHED]
        for old in finished[: max(len(self._runs) - KEPT_RUNS, 0)]:
            del self._runs[old.id]

    def _execute(self, run: Run, work: Work) -> None:
        with self._lock:  # against `cancel`, which ends a run still queued
            if run.state != QUEUED:  # cancelled while it waited
                return
            run.state, run.started = RUNNING, time.time()
        run.emit("started")
        bound_heap()  # as a CLI command's (archive/memory.py): the daemon never exits to give it back
        ticker = _Ticker(run)
        try:
            try:
                with cancellation.scope(run.cancellation):  # what the work calls finds it (proc, QMP)
                    summary, exit_status = work(run, ticker.follow)
            finally:
                ticker.stop()
        except JobCancelledError as err:
            self._end(run, CANCELLED, error=err)
        except ShadowvaultError as err:
            self._end(run, FAILED, error=err)
        except Exception as err:
            log.exception("run %s: internal error", run.id)
            self._end(run, FAILED, error=ShadowvaultError(f"internal error: {type(err).__name__}: {err}"))
        else:
            run.result, run.exit_status = summary, exit_status
            run.emit("summary", summary, exit_status=exit_status)
            self._end(run, SUCCEEDED if exit_status == 0 else FAILED)

    def _end(self, run: Run, state: str, error: ShadowvaultError | None = None) -> None:
        if error is not None:
            run.error, run.error_kind = " ".join(str(error).split()), type(error).__name__
            run.exit_status = error.exit_code
            run.emit("error", error=run.error, kind=run.error_kind, exit_status=run.exit_status)
        run.finished = time.time()
        with self._lock:  # a `cancel` at this moment must not make it `cancelling` again
            run.state = state  # last: a stream that sees the run finished has every event
        log.info("run %s (%s) %s", run.id, run.description, state)

    def get(self, run_id: str) -> Run:
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            raise NotFoundError(f"no run {run_id}")
        return run

    def all(self) -> list[Run]:
        with self._lock:
            return list(self._runs.values())

    def cancel(self, run_id: str, reason: str | None = None) -> Run:
        """Cancel a run: one still queued ends `cancelled` now, a running one is `cancelling` until
        its work stops (at its next entry, blob or chunk) and then ends `cancelled`; an ended one
        is left as it is. The run, as it is now."""
        run = self.get(run_id)
        with self._lock:
            if run.state in (*FINISHED, CANCELLING):
                return run
            run.cancellation.cancel(reason or f"run {run.id} was cancelled")
            queued = run.state == QUEUED
            run.state = CANCELLING  # `_execute` no longer starts it
        run.emit("cancelling")
        if queued:
            self._end(run, CANCELLED, error=JobCancelledError(run.cancellation.reason))
        return run

    def cancel_all(self, reason: str) -> None:
        """Cancel every run that has not ended, and start none after (the daemon is stopping)."""
        with self._lock:
            self._stopping = reason
        for run in self.all():
            self.cancel(run.id, reason)

    def wait(self) -> None:
        """Wait for every run to end (after cancel_all: to unwind)."""
        self._pool.shutdown(wait=True, cancel_futures=False)


class _Ticker:
    """A `status` event every STATUS_INTERVAL from the counters the work says to follow."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._status: Callable[[], dict[str, Any]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"sv-status-{run.id}", daemon=True)
        self._thread.start()

    def follow(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def _loop(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(STATUS_INTERVAL):
            if self._status is not None:
                elapsed = round(time.monotonic() - started, 1)
                self.run.emit("status", self._status(), seconds_elapsed=elapsed)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
