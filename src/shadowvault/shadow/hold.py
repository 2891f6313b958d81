"""The hold of a shadow set: its writers frozen, watched by a watchdog, and thawed, whatever happens.

Application writers freeze together (concurrently); filesystem freezes (fsfreeze) come after them,
one after another, and thaw first. The freeze timeout covers the whole freeze phase. A watchdog
process (watchdog.py) gets every writer's WatchdogActions before the first freeze and performs them
if this process dies or the deadline passes.

The coordinator runs the sequence around the hold; when the hold cannot go on (a writer with
on_failure=abort fails to freeze or thaw, the watchdog gave up on us) HoldBroken says why and the
coordinator aborts the set, calling `release`: every writer gets abort, the watchdog is dismissed
(or fired, when our own release hung).
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures

from shadowvault.shadow.events import (
    WriterRun,
    abort_writers,
    active_runs,
    end_thaw,
    event_all,
    record_failures,
    release_degraded,
    start_thaw,
    watchdog_actions,
    watchdog_deadline,
)
from shadowvault.shadow.manifest import ShadowSetManifest, WriterState
from shadowvault.shadow.options import SetOptions
from shadowvault.shadow.watchdog import Watchdog, WatchdogStartError
from shadowvault.shadow.writers.base import SnapshotContext


class HoldBroken(Exception):
    """The hold cannot go on and the set must be aborted; `message` names the writer and the phase."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause


class Hold:
    """The freeze window of one set: the writers that hold, the watchdog, when the window opened."""

    def __init__(
        self,
        runs: list[WriterRun],
        ctx: SnapshotContext,
        options: SetOptions,
        manifest: ShadowSetManifest,
        freezer_targets: dict[str, set[str]],
    ) -> None:
        self.runs = runs
        self.ctx = ctx
        self.options = options
        self.manifest = manifest
        self.freezer_targets = freezer_targets  # mount points each fsfreeze writer freezes, by label
        self.watchdog: Watchdog | None = None
        self._started: float | None = None
        self._thaw_running: tuple[Future[None], float] | None = None  # a writer's thaw and its deadline

    def start_watchdog(self) -> None:
        """Hand the watchdog what to do if we die; none is needed when every hold dies with us."""
        active = active_runs(self.runs)
        actions = watchdog_actions(active)
        if not actions:
            return  # every hold dies with this process (database sessions, locks)
        timeouts = self.options.freeze_timeout + self.options.commit_timeout
        try:
            self.watchdog = Watchdog.start(actions, watchdog_deadline(active, timeouts))
        except WatchdogStartError as err:
            raise HoldBroken(f"cannot freeze without a watchdog: {err}", err) from err

    def freeze(self) -> None:
        """Application writers together, then each filesystem freeze, all within the freeze timeout."""
        ctx = self.ctx
        timeout = self.options.freeze_timeout
        phase_deadline = time.monotonic() + timeout
        self._started = time.monotonic()
        self.manifest.frozen_at = time.time()
        active = active_runs(self.runs)
        app = [r for r in active if not r.is_filesystem_freezer]
        fs = [r for r in active if r.is_filesystem_freezer]

        def freeze(run: WriterRun) -> None:
            run.freeze_started = True
            run.report.state = WriterState.WAITING_FOR_FREEZE
            run.timed("freeze", lambda: run.writer.freeze(ctx))
            run.held = True
            run.report.state = WriterState.FROZEN

        for batch in ([app] if app else []) + [[run] for run in fs]:
            self.check_watchdog("freeze")  # never freeze more once the watchdog has given up on us
            remaining = max(phase_deadline - time.monotonic(), 0.001)
            culprit = record_failures("freeze", event_all("freeze", batch, freeze, remaining), timeout)
            if culprit is not None:
                raise HoldBroken(*culprit)
            release_degraded(self.runs, ctx)
        self.manifest.phases["freeze"] = round(time.monotonic() - self._started, 6)
        self.check_watchdog("freeze")

    def check_watchdog(self, phase: str) -> None:
        """HoldBroken once the watchdog has released the set on its own (its deadline passed)."""
        if self.watchdog is not None and self.watchdog.fired():
            self.watchdog = None
            raise HoldBroken(self._released_by_watchdog(f"during {phase}"))

    def frozen_volumes(self) -> set[str]:
        """The mount points a filesystem freeze holds now (one instant for what commits meanwhile)."""
        return {m for r in active_runs(self.runs) if r.held for m in self.freezer_targets.get(r.label, ())}

    def thaw(self) -> None:
        """Every held writer thawed (filesystems first); HoldBroken if one failed or the watchdog fired."""
        started = time.monotonic()
        fs_first = sorted(
            (r for r in active_runs(self.runs) if r.held), key=lambda r: not r.is_filesystem_freezer
        )
        failures = []
        for run in fs_first:
            future = start_thaw(run, self.ctx)
            self._thaw_running = (future, time.monotonic() + run.thaw_timeout)
            failure = end_thaw(run, future)
            self._thaw_running = None
            if failure:
                failures.append(failure)
        self.close_window()
        self.manifest.phases["thaw"] = round(time.monotonic() - started, 6)
        fired = self.watchdog is not None and self.watchdog.fired()
        if self.watchdog is not None:
            if failures:
                self.watchdog.fire()
            else:
                self.watchdog.thawed()
            self.watchdog = None
        if fired:
            raise HoldBroken(self._released_by_watchdog("before the thaw"))
        if failures:
            # VSS: a writer failing at thaw means its data in the shadow cannot be trusted.
            raise HoldBroken(failures[0])

    def release(self) -> None:
        """The abort's part: every writer gets abort, and the watchdog is dismissed or fired."""
        if self._thaw_running is not None:
            # Interrupted while a writer thawed: let that thaw end (within its timeout) rather than
            # have the writer's abort cut it short and leave its application half resumed.
            future, deadline = self._thaw_running
            self._thaw_running = None
            wait_futures([future], timeout=max(deadline - time.monotonic(), 0))
        stuck = abort_writers(self.runs, self.ctx)
        if self.watchdog is not None:
            if stuck:  # our own release hung: let the watchdog do what it can
                self.watchdog.fire()
            else:
                self.watchdog.thawed()
            self.watchdog = None

    def close_window(self) -> None:
        """Record the freeze window (freeze start -> now) once, if anything was frozen."""
        if self._started is not None and self.manifest.freeze_window is None:
            self.manifest.freeze_window = round(time.monotonic() - self._started, 6)

    def _released_by_watchdog(self, when: str) -> str:
        options = self.options
        limits = f"freeze timeout {options.freeze_timeout:g} s + commit timeout {options.commit_timeout:g} s"
        return f"the watchdog released the set at its deadline {when} ({limits})"
