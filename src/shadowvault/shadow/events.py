"""Event plumbing for the coordinator: every writer event in a worker thread, bounded by a timeout.

The coordinator's own thread never calls a writer directly: a writer may block on a frozen
filesystem or a hung application, and the coordinator must always be free to thaw. Threads are
daemons, so an abandoned, hung call never keeps the process from exiting.

A cancelled run (cancellation.py) reaches the events that prepare and finish a set (identify,
prepare_*, post_snapshot: their commands are terminated, their waits cut short, their SQL statements
cancelled on the server), and the set is aborted once the phase has ended. A freeze sees it only
for a writer whose freeze holds nothing when cut short (`Writer.freeze_can_be_cancelled`: a
database's lock statement); a thaw, an abort and backup_complete never do.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from typing import NamedTuple, TypeVar

from shadowvault import cancellation
from shadowvault.errors import JobCancelledError, ShadowError, ShadowvaultError
from shadowvault.shadow.manifest import ShadowSetManifest, WriterReport, WriterState
from shadowvault.shadow.writers.base import FailurePolicy, SnapshotContext, WatchdogAction, Writer

log = logging.getLogger(__name__)

EVENT_TIMEOUT = 300.0  # identify, prepare_*, post_snapshot, backup_complete: slow work is allowed there
THAW_TIMEOUT = 60.0  # a writer's thaw (scripts bring their own timeout, up to 1800 s)
WATCHDOG_GRACE = 30.0  # past freeze + commit timeouts, before the watchdog thaws on its own

FAILED_AT = {
    "identify": WriterState.FAILED_AT_IDENTIFY,
    "prepare_backup": WriterState.FAILED_AT_PREPARE_BACKUP,
    "prepare_snapshot": WriterState.FAILED_AT_PREPARE_SNAPSHOT,
    "freeze": WriterState.FAILED_AT_FREEZE,
    "thaw": WriterState.FAILED_AT_THAW,
    "post_snapshot": WriterState.FAILED_AT_POST_SNAPSHOT,
    "backup_complete": WriterState.FAILED_AT_BACKUP_COMPLETE,
}

T = TypeVar("T")


def in_thread(
    fn: Callable[..., T], *args: object, name: str = "writer-event", cancellable: bool = False
) -> Future[T]:
    """Run `fn(*args)` in a daemon thread (an abandoned, hung call must not block exit).

    `cancellable`: the call sees the caller's Cancellation (cancellation.current()), so cancelling
    the run stops the commands and waits it makes. Never for a freeze, a thaw, an abort or
    backup_complete: those hold or release an application and must run to their end.
    """
    future: Future[T] = Future()
    context = contextvars.copy_context() if cancellable else contextvars.Context()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(context.run(fn, *args))
        except BaseException as err:
            future.set_exception(err)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


def reason(err: BaseException | None) -> str:
    """An error in words, for a writer's failure and the abort message."""
    if err is None:
        return "no reason given"
    return str(err) or type(err).__name__


class WriterRun:
    """One writer's progress through the sequence, as it ends up in the manifest."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.report = WriterReport(name=writer.name, instance=writer.instance)
        self.freeze_started = False
        self.held = False  # froze successfully and has not been thawed yet
        self.degraded = False

    @property
    def label(self) -> str:
        return self.writer.label

    @property
    def is_filesystem_freezer(self) -> bool:
        return self.writer.freezes_filesystems

    @property
    def thaw_timeout(self) -> float:
        """How long its thaw may take: the default, or its own command's timeout and a margin."""
        return max(THAW_TIMEOUT, self.writer.timeout + 5)

    def fail(self, phase: str, state: WriterState, why: str) -> None:
        self.report.state = state
        self.report.failure = f"{phase}: {why}"

    def timed(self, phase: str, fn: Callable[[], T]) -> T:
        """Call `fn`, recording how long it took as this writer's timing for `phase`."""
        started = time.monotonic()
        try:
            return fn()
        finally:
            self.report.timings[phase] = round(time.monotonic() - started, 6)


def active_runs(runs: Sequence[WriterRun]) -> list[WriterRun]:
    """The writers still in the set: every one but those degraded out of it."""
    return [run for run in runs if not run.degraded]


class Outcome(NamedTuple):
    """How one writer's event ended: with an error, past its timeout, or well (both falsy)."""

    run: WriterRun
    error: BaseException | None
    timed_out: bool


def event_all(
    phase: str,
    runs: Sequence[WriterRun],
    call: Callable[[WriterRun], object],
    timeout: float,
    *,
    cancellable: bool = False,
) -> list[Outcome]:
    """Run one event on `runs` concurrently and wait at most `timeout`; an Outcome for each, in order.
    `cancellable`: a cancel of the run stops the event's commands and waits (in_thread); a freeze
    is cancellable for the writers whose freeze holds nothing when cut short, whatever it says."""
    futures = [
        (
            run,
            in_thread(
                call, run, name=f"{phase}:{run.label}", cancellable=cancellable or _cut_short(phase, run)
            ),
        )
        for run in runs
    ]
    started = time.monotonic()
    wait_futures([f for _, f in futures], timeout=timeout)
    results: list[Outcome] = []
    for run, future in futures:
        if not future.done():
            run.report.timings[phase] = round(time.monotonic() - started, 6)
            results.append(Outcome(run, None, True))
        else:
            results.append(Outcome(run, future.exception(), False))
    return results


def _cut_short(phase: str, run: WriterRun) -> bool:
    """Whether a cancel of the run reaches this writer's `phase` even though the phase is not cancellable."""
    return phase == "freeze" and run.writer.freeze_can_be_cancelled


def start_thaw(run: WriterRun, ctx: SnapshotContext) -> Future[None]:
    """Start one writer's thaw in its own thread (the caller may need to wait for it on an abort)."""
    return in_thread(run.timed, "thaw", functools.partial(run.writer.thaw, ctx), name=f"thaw:{run.label}")


def end_thaw(run: WriterRun, future: Future[None]) -> str | None:
    """Wait for a thaw within the writer's thaw timeout; None when it thawed, else the failure in words."""
    timeout = run.thaw_timeout
    wait_futures([future], timeout=timeout)
    run.held = False
    if not future.done():
        run.fail("thaw", WriterState.TIMED_OUT, f"timed out after {timeout:.1f} s")
        return f"writer {run.label} timed out at thaw after {timeout:.1f} s"
    error = future.exception()
    if error is not None:
        run.fail("thaw", WriterState.FAILED_AT_THAW, reason(error))
        return f"writer {run.label} failed at thaw: {reason(error)}"
    run.report.state = WriterState.WAITING_FOR_POST_SNAPSHOT
    return None


def watchdog_actions(runs: Sequence[WriterRun]) -> list[WatchdogAction]:
    """What the watchdog must do for `runs` if this process dies, filesystems first (thawed first)."""
    actions: list[WatchdogAction] = []
    for run in sorted(runs, key=lambda r: not r.is_filesystem_freezer):
        actions.extend(run.writer.watchdog_actions())
    return actions


def watchdog_deadline(runs: Sequence[WriterRun], timeouts: float) -> float:
    """When the watchdog releases everything on its own: past the set's own timeouts (`timeouts`,
    freeze + commit), and past the longest thaw a writer may legitimately take."""
    longest_thaw = max((r.writer.timeout for r in runs), default=0.0)
    return time.monotonic() + timeouts + WATCHDOG_GRACE + longest_thaw


def record_failures(
    phase: str, results: Sequence[Outcome], timeout: float
) -> tuple[str, BaseException | None] | None:
    """Record each failure of `phase` in its writer's state; the first that must abort the set, if any.

    A writer with on_failure=degrade is marked degraded instead (except at identify: a writer that
    cannot describe its data has nothing to degrade to) and the set goes on without it. A set whose
    run was cancelled is aborted for that, whatever failed with it (JobCancelledError: the run ends
    `cancelled`).
    """
    culprit: tuple[str, BaseException | None] | None = None
    for run, error, timed_out in results:
        if timed_out:
            message = f"writer {run.label} timed out at {phase} after {timeout:.1f} s"
            run.fail(phase, WriterState.TIMED_OUT, f"timed out after {timeout:.1f} s")
        elif error is not None:
            message = f"writer {run.label} failed at {phase}: {reason(error)}"
            run.fail(phase, FAILED_AT.get(phase, WriterState.ABORTED), reason(error))
        else:
            continue
        if run.writer.failure_policy == FailurePolicy.DEGRADE and phase != "identify":
            log.warning("%s; going on without it (its data is only crash-consistent)", message)
            run.degraded = True
            continue
        if culprit is None:
            culprit = (message, error)
    return _cancelled_at(phase) or culprit


def _cancelled_at(phase: str) -> tuple[str, BaseException] | None:
    """The abort of a set whose run was cancelled during `phase` (its message and cause), if it was."""
    cancelled = cancellation.current()
    if cancelled is None or not cancelled.cancelled:
        return None
    return f"cancelled at {phase}: {cancelled.reason}", JobCancelledError(cancelled.reason)


def abort_writers(runs: Sequence[WriterRun], ctx: SnapshotContext) -> list[str]:
    """Send abort to `runs` (filesystems one by one, then applications at once); the labels that hung.

    A thaw script may need to write, so filesystems come first; application writers are released
    together, so one slow release does not delay the others.
    """
    stuck: list[str] = []
    fs_runs = [r for r in runs if r.is_filesystem_freezer]
    app_runs = [r for r in runs if not r.is_filesystem_freezer]
    for group in [[r] for r in fs_runs] + [app_runs]:
        futures = [(r, in_thread(r.writer.abort, ctx, name=f"abort:{r.label}")) for r in group]
        wait_futures([f for _, f in futures], timeout=THAW_TIMEOUT)
        for run, future in futures:
            if not future.done():
                stuck.append(run.label)
            elif future.exception() is not None:
                log.warning("writer %s: abort failed: %s", run.label, future.exception())
            run.held = False
            if not run.report.state.failed:
                run.report.state = WriterState.ABORTED
    return stuck


def release_degraded(runs: Sequence[WriterRun], ctx: SnapshotContext) -> None:
    """A degraded writer is out of the set: release whatever it may hold, now."""
    for run in runs:
        if run.degraded and (run.freeze_started or run.held):
            run.held = False
            future = in_thread(run.writer.abort, ctx, name=f"abort:{run.label}")
            wait_futures([future], timeout=THAW_TIMEOUT)


def set_error(message: str, cause: BaseException | None, manifest: ShadowSetManifest) -> ShadowvaultError:
    """The error an aborted set raises: the cause's own kind when it is one of ours, else ShadowError."""
    error_type: type[ShadowvaultError] = (
        type(cause)
        if isinstance(cause, ShadowvaultError) and not isinstance(cause, ShadowError)
        else ShadowError
    )
    try:
        error = error_type(message)
    except TypeError:
        error = ShadowError(message)
    error.manifest = manifest
    return error
