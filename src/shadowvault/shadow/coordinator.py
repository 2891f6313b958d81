"""The coordinator: runs the shadow-set sequence, enforces its timeouts, and guarantees the thaw.

    identify -> prepare_backup -> prepare_snapshot -> freeze -> commit (providers) -> thaw
             -> post_snapshot -> [the requester reads the shadows] -> backup_complete -> release

Rules it keeps (those of VSS):
- Every writer event runs in a worker thread with a timeout (events.py); the coordinator's own
  thread never blocks on a frozen filesystem, so it can always thaw.
- Application writers freeze together (concurrently); filesystem freezes (fsfreeze) come after them
  and thaw first. The freeze timeout (default 60 s) covers the whole freeze phase; providers must
  commit within the commit timeout (default 10 s). Past either, or when a writer with
  on_failure=abort fails, the set is aborted: every writer gets abort, running commits are
  cancelled (commits.py), nothing stays frozen or held, no image is left, and the ShadowError names
  the writer or provider and the phase. A writer with on_failure=degrade that fails leaves its
  components crash-consistent and the set goes on.
- The commit happens inside the hold for every provider. For reflink (not atomic) that means the
  whole copy runs while writers hold, so writer data is consistent and the freeze window includes
  the copy. With the live provider nothing is copied: the requester reads live files after thaw,
  so no component on it is better than `none` (grading.py; the manifest says so).
- fsfreeze is never combined with a provider that forbids it (planning.py): refused before anything
  is frozen, with an error naming both.
- A set is one instant across its volumes only when one filesystem freeze held them all while every
  provider committed, or a provider took them together (lvm on Linux 6.8+ freezes them itself);
  otherwise (btrfs, lvm on older kernels: they cannot be combined with fsfreeze) the images are
  taken one after another and the manifest's notes say so.
- A watchdog process (watchdog.py) gets every writer's WatchdogActions before the first freeze and
  performs them if this process dies or the deadline passes.

The requester says how with one SetOptions (options.py) and enters through `shadow_set` (a set for
the duration of a `with` block) or `create_shadow_set` (a set that stays).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures

from shadowvault.errors import ShadowvaultError
from shadowvault.shadow import planning
from shadowvault.shadow.commits import CommitFailed, Commits
from shadowvault.shadow.events import (
    EVENT_TIMEOUT,
    Outcome,
    WriterRun,
    abort_writers,
    end_thaw,
    event_all,
    reason,
    record_failures,
    release_degraded,
    set_error,
    start_thaw,
    watchdog_actions,
    watchdog_deadline,
)
from shadowvault.shadow.grading import grade
from shadowvault.shadow.manifest import ShadowSetManifest, WriterState
from shadowvault.shadow.options import DEFAULTS, SetOptions
from shadowvault.shadow.path_map import shadow_path
from shadowvault.shadow.set_locks import set_locks
from shadowvault.shadow.store import ShadowStore, max_shadows_per_volume
from shadowvault.shadow.volumes import Volume, list_volumes
from shadowvault.shadow.watchdog import Watchdog, WatchdogStartError
from shadowvault.shadow.writers.base import SnapshotContext

__all__ = ["SetOptions", "ShadowSetRun", "create_shadow_set", "shadow_path", "shadow_set"]

log = logging.getLogger(__name__)


class ShadowSetRun:
    """One shadow set from start to release. Use `shadow_set()` or `create_shadow_set()`."""

    def __init__(self, volumes: Sequence[str], options: SetOptions = DEFAULTS) -> None:
        self.volume_args = list(volumes)
        self.options = options
        self.runs: list[WriterRun] = []
        self.commits = Commits({})
        self.watchdog: Watchdog | None = None
        self.store = ShadowStore()
        self.ctx: SnapshotContext | None = None
        self.manifest: ShadowSetManifest | None = None
        self._freeze_start: float | None = None
        self._aborted = False
        self._thaw_running: tuple[Future[None], float] | None = None  # a writer's thaw and its deadline
        self._freezer_targets: dict[str, set[str]] = {}  # mount points each fsfreeze writer freezes

    def _active(self) -> list[WriterRun]:
        return [run for run in self.runs if not run.degraded]

    def _handle(self, phase: str, results: list[Outcome], timeout: float) -> None:
        """Record failures of `phase`; abort the set for the first that must abort it."""
        culprit = record_failures(phase, results, timeout)
        if culprit is not None:
            raise self._abort(*culprit)

    def _phase(self, phase: str, call: Callable[[WriterRun], object]) -> None:
        """One event for every active writer (a cancel of the run reaches it), failures handled, timed."""
        assert self.manifest is not None
        started = time.monotonic()
        results = event_all(phase, self._active(), call, EVENT_TIMEOUT, cancellable=True)
        self._handle(phase, results, EVENT_TIMEOUT)
        self.manifest.phases[phase] = round(time.monotonic() - started, 6)

    def _release_degraded(self) -> None:
        assert self.ctx is not None
        release_degraded(self.runs, self.ctx)

    # ---- abort ---------------------------------------------------------------------------------

    def _abort(self, message: str, cause: BaseException | None = None) -> ShadowvaultError:
        """Release everything (every writer gets abort), mark the set aborted; return the error to raise."""
        assert self.manifest is not None
        self._aborted = True
        started = time.monotonic()
        if self._thaw_running is not None:
            # Interrupted while a writer thawed: let that thaw end (within its timeout) rather than
            # have the writer's abort cut it short and leave its application half resumed.
            future, deadline = self._thaw_running
            self._thaw_running = None
            wait_futures([future], timeout=max(deadline - time.monotonic(), 0))
        if self.ctx is not None:
            stuck = abort_writers(self.runs, self.ctx)
            if self.watchdog is not None:
                if stuck:  # our own release hung: let the watchdog do what it can
                    self.watchdog.fire()
                else:
                    self.watchdog.thawed()
                self.watchdog = None
        self.commits.delete(self.manifest.shadows)
        self.manifest.shadows = []
        self._finish_freeze_window()
        self.manifest.phases["abort"] = round(time.monotonic() - started, 6)
        self.manifest.state = "aborted"
        self.manifest.writers = [run.report for run in self.runs]
        self.manifest.notes.append(f"aborted: {message}")
        self._forget_in_store()
        return set_error(message, cause, self.manifest)

    def _forget_in_store(self) -> None:
        if self.manifest is None:
            return
        try:
            self.store.release(self.manifest.id)
        except Exception as err:
            log.debug("store: cannot forget aborted set %s: %s", self.manifest.id, err)

    def _finish_freeze_window(self) -> None:
        assert self.manifest is not None
        if self._freeze_start is not None and self.manifest.freeze_window is None:
            self.manifest.freeze_window = round(time.monotonic() - self._freeze_start, 6)

    def _check_watchdog(self, phase: str) -> None:
        if self.watchdog is not None and self.watchdog.fired():
            self.watchdog = None
            raise self._abort(
                f"the watchdog released the set at its deadline during {phase} ({self._limits()})"
            )

    def _limits(self) -> str:
        options = self.options
        return f"freeze timeout {options.freeze_timeout:g} s + commit timeout {options.commit_timeout:g} s"

    # ---- the sequence ----------------------------------------------------------------------------

    def create(self) -> ShadowSetManifest:
        """Run the sequence up to post_snapshot; the manifest of the created set (ShadowError if aborted)."""
        volumes = planning.resolve_volumes(self.volume_args)
        all_volumes = list_volumes(with_uuid=False)
        self.commits = Commits(planning.choose_providers(volumes, self.options.provider))
        self.runs = planning.make_runs(volumes, self.options)
        planning.check_freeze_policies(self.runs, volumes, self.commits.providers)
        self._freezer_targets = planning.freezer_targets(self.runs, volumes)

        self.manifest = ShadowSetManifest(
            id=self.store.new_id(),
            created=time.time(),
            host=socket.gethostname(),
            persistent=self.options.persistent,
            requester_pid=os.getpid(),  # until created: a dead creator's leftovers get reaped
            requester_uid=os.getuid() if self.options.requester_uid is None else self.options.requester_uid,
            provider=self.options.provider_name,
        )
        self.ctx = SnapshotContext(
            set_id=self.manifest.id, volumes=volumes, backup_type=self.options.backup_type
        )
        with set_locks(volumes, self.runs):  # sets sharing a volume or a writer: one at a time, machine-wide
            try:
                return self._sequence(volumes, all_volumes)
            except BaseException as err:
                if not self._aborted:  # an interrupt, or an error outside the writers' and providers' events
                    self._abort(f"interrupted: {reason(err)}")
                raise

    def _sequence(self, volumes: list[Volume], all_volumes: list[Volume]) -> ShadowSetManifest:
        assert self.manifest is not None and self.ctx is not None
        ctx = self.ctx
        for run in self.runs:
            run.writer.freeze_timeout = min(run.writer.freeze_timeout, self.options.freeze_timeout)

        # identify and prepare_backup: failures here abort before anything is held.
        def identify(run: WriterRun) -> None:
            run.report.components = list(run.timed("identify", run.writer.identify))

        def prepare_backup(run: WriterRun) -> None:
            run.timed("prepare_backup", lambda: run.writer.prepare_backup(ctx))
            run.report.components = list(run.writer.identify())  # as the writer sees them now

        self._phase("identify", identify)
        self._phase("prepare_backup", prepare_backup)
        planning.check_writer_volumes(self.runs, volumes, all_volumes)

        self.store.reap([v.mount_point for v in volumes])  # also orphan images on these volumes
        for volume in volumes:
            self.store.enforce_limit(volume.mount_point, max_shadows_per_volume())
        self.manifest.writers = [run.report for run in self.runs]
        self.store.save(self.manifest)
        # Before anything is frozen, the paths the providers will create: if we die at any moment from
        # here on, reap() deletes them, made or not (a write now does not lengthen the freeze window).
        self.store.record_intent(self.manifest.id, self.commits.planned(volumes, self.manifest.id))

        self._phase(
            "prepare_snapshot", lambda r: r.timed("prepare_snapshot", lambda: r.writer.prepare_snapshot(ctx))
        )
        self._release_degraded()

        self._start_watchdog()
        self._freeze()
        self._commit(volumes)
        held = {m for r in self._active() if r.held for m in self._freezer_targets.get(r.label, ())}
        self._thaw()
        note = planning.separate_instants_note(self.manifest.shadows, held | self.commits.together)
        if note:
            self.manifest.notes.append(note)
        # Record the shadows at once (still `creating`): if we die from here on, reap() finds and
        # deletes them. Not earlier: a write to the state directory would lengthen the freeze window.
        self.manifest.writers = [run.report for run in self.runs]
        self.store.save(self.manifest)
        self._post_snapshot()
        grade(self.manifest, self.runs, [v.mount_point for v in volumes])
        self.manifest.state = "created"
        if self.options.persistent:
            self.manifest.requester_pid = None  # kept until deleted, whoever made it
        self.manifest.writers = [run.report for run in self.runs]
        self.store.save(self.manifest)
        self.store.clear_intent(self.manifest.id)  # the record lists every shadow now
        return self.manifest

    def _start_watchdog(self) -> None:
        actions = watchdog_actions(self._active())
        if not actions:
            return  # every hold dies with this process (database sessions, locks)
        timeouts = self.options.freeze_timeout + self.options.commit_timeout
        try:
            self.watchdog = Watchdog.start(actions, watchdog_deadline(self._active(), timeouts))
        except WatchdogStartError as err:
            raise self._abort(f"cannot freeze without a watchdog: {err}") from err

    def _freeze(self) -> None:
        assert self.manifest is not None and self.ctx is not None
        ctx = self.ctx
        timeout = self.options.freeze_timeout
        phase_deadline = time.monotonic() + timeout
        self._freeze_start = time.monotonic()
        self.manifest.frozen_at = time.time()
        app = [r for r in self._active() if not r.is_filesystem_freezer]
        fs = [r for r in self._active() if r.is_filesystem_freezer]

        def freeze(run: WriterRun) -> None:
            run.freeze_started = True
            run.report.state = WriterState.WAITING_FOR_FREEZE
            run.timed("freeze", lambda: run.writer.freeze(ctx))
            run.held = True
            run.report.state = WriterState.FROZEN

        # Application writers together; then filesystem freezes one after another, each within what is left.
        for batch in ([app] if app else []) + [[run] for run in fs]:
            self._check_watchdog("freeze")  # never freeze more once the watchdog has given up on us
            remaining = max(phase_deadline - time.monotonic(), 0.001)
            self._handle("freeze", event_all("freeze", batch, freeze, remaining), timeout)
            self._release_degraded()
        self.manifest.phases["freeze"] = round(time.monotonic() - self._freeze_start, 6)
        self._check_watchdog("freeze")

    def _commit(self, volumes: list[Volume]) -> None:
        assert self.manifest is not None
        started = time.monotonic()
        try:
            self.commits.commit(volumes, self.manifest.id, self.options.commit_timeout, self.manifest.shadows)
        except CommitFailed as failed:
            raise self._abort(failed.message, failed.cause) from failed.cause
        self.manifest.phases["commit"] = round(time.monotonic() - started, 6)
        self._check_watchdog("commit")

    def _thaw(self) -> None:
        assert self.manifest is not None and self.ctx is not None
        ctx = self.ctx
        started = time.monotonic()
        fs_first = sorted((r for r in self._active() if r.held), key=lambda r: not r.is_filesystem_freezer)
        failures = []
        for run in fs_first:
            future = start_thaw(run, ctx)
            self._thaw_running = (future, time.monotonic() + run.thaw_timeout)
            failure = end_thaw(run, future)
            self._thaw_running = None
            if failure:
                failures.append(failure)
        self._finish_freeze_window()
        self.manifest.phases["thaw"] = round(time.monotonic() - started, 6)
        fired = self.watchdog is not None and self.watchdog.fired()
        if self.watchdog is not None:
            if failures:
                self.watchdog.fire()
            else:
                self.watchdog.thawed()
            self.watchdog = None
        if fired:
            raise self._abort(
                f"the watchdog released the set at its deadline before the thaw ({self._limits()})"
            )
        if failures:
            # VSS: a writer failing at thaw means its data in the shadow cannot be trusted.
            raise self._abort(failures[0])

    def _post_snapshot(self) -> None:
        assert self.manifest is not None and self.ctx is not None
        ctx = self.ctx
        ctx.shadows = list(self.manifest.shadows)
        self._phase("post_snapshot", lambda r: r.timed("post_snapshot", lambda: r.writer.post_snapshot(ctx)))
        for run in self._active():
            run.report.state = WriterState.WAITING_FOR_BACKUP_COMPLETE
            with contextlib.suppress(Exception):
                run.report.metadata = dict(run.writer.metadata())

    # ---- after the requester has read the shadows ---------------------------------------------------

    def complete(self, succeeded: bool) -> None:
        """backup_complete for every writer, then release the set unless it is persistent."""
        assert self.manifest is not None and self.ctx is not None
        ctx = self.ctx
        started = time.monotonic()
        results = event_all(
            "backup_complete",
            self._active(),
            lambda r: r.timed("backup_complete", lambda: r.writer.backup_complete(ctx, succeeded)),
            EVENT_TIMEOUT,
        )
        for run, error, timed_out in results:
            if timed_out or error is not None:
                why = "timed out" if timed_out else reason(error)
                run.fail("backup_complete", WriterState.FAILED_AT_BACKUP_COMPLETE, why)
                log.warning("writer %s failed at backup_complete: %s", run.label, why)
            else:
                run.report.state = WriterState.STABLE
        self.manifest.phases["backup_complete"] = round(time.monotonic() - started, 6)
        self.manifest.writers = [run.report for run in self.runs]
        if self.options.persistent:
            with contextlib.suppress(Exception):
                self.store.save(self.manifest)
            return
        self.store.release(self.manifest.id)
        self.manifest.state = "released"


def create_shadow_set(volumes: Sequence[str], options: SetOptions = DEFAULTS) -> ShadowSetManifest:
    """Create a shadow set and keep it (stored in the state directory); returns its manifest.

    No backup_complete is sent (nothing was backed up). A non-persistent set records this process
    as its requester and is reaped by the store once the process has ended.
    """
    run = ShadowSetRun(volumes, options)
    manifest = run.create()
    for report in manifest.writers:
        if report.state == WriterState.WAITING_FOR_BACKUP_COMPLETE:
            report.state = WriterState.STABLE
    run.store.save(manifest)
    return manifest


@contextlib.contextmanager
def shadow_set(volumes: Sequence[str], options: SetOptions = DEFAULTS) -> Iterator[ShadowSetManifest]:
    """A shadow set for the duration of a `with` block: read the shadows inside it.

    On exit every writer gets backup_complete(succeeded = the block raised nothing), and the set
    is released unless `options.persistent`.
    """
    run = ShadowSetRun(volumes, options)
    manifest = run.create()
    succeeded = False
    try:
        yield manifest
        succeeded = True
    finally:
        run.complete(succeeded)
