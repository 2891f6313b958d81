"""The coordinator: runs the shadow-set sequence, enforces its timeouts, and guarantees the thaw.

    identify -> prepare_backup -> prepare_snapshot -> freeze -> commit (providers) -> thaw
             -> post_snapshot -> [the requester reads the shadows] -> backup_complete -> release

Rules it keeps (those of VSS):
- Every writer event runs in a worker thread with a timeout (events.py); the coordinator's own
  thread never blocks on a frozen filesystem, so it can always thaw.
- The hold (hold.py): application writers freeze together (concurrently); filesystem freezes
  (fsfreeze) come after them and thaw first. The freeze timeout (default 60 s) covers the whole
  freeze phase; providers must commit within the commit timeout (default 10 s). Past either, or
  when a writer with on_failure=abort fails, the set is aborted: every writer gets abort, running
  commits are cancelled (commits.py), nothing stays frozen or held, no image is left, and the
  ShadowError names the writer or provider and the phase. A writer with on_failure=degrade that
  fails leaves its components crash-consistent and the set goes on.
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
- A watchdog process (watchdog.py, started by the hold) gets every writer's WatchdogActions before
  the first freeze and performs them if this process dies or the deadline passes.

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

from shadowvault.errors import ShadowvaultError
from shadowvault.shadow import planning
from shadowvault.shadow.commits import CommitFailed, Commits
from shadowvault.shadow.events import (
    EVENT_TIMEOUT,
    WriterRun,
    active_runs,
    event_all,
    reason,
    record_failures,
    release_degraded,
    set_error,
)
from shadowvault.shadow.grading import grade
from shadowvault.shadow.hold import Hold, HoldBroken
from shadowvault.shadow.manifest import ShadowSetManifest, WriterState
from shadowvault.shadow.options import DEFAULTS, SetOptions
from shadowvault.shadow.path_map import shadow_path
from shadowvault.shadow.set_locks import set_locks
from shadowvault.shadow.store import ShadowStore, max_shadows_per_volume
from shadowvault.shadow.volumes import Volume, list_volumes
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
        self.store = ShadowStore()
        self.ctx: SnapshotContext | None = None
        self.manifest: ShadowSetManifest | None = None
        self.hold: Hold | None = None
        self._aborted = False

    def _active(self) -> list[WriterRun]:
        return active_runs(self.runs)

    def _phase(self, phase: str, call: Callable[[WriterRun], object]) -> None:
        """One event for every active writer (a cancel of the run reaches it), failures handled, timed:
        the set is aborted for the first failure that must abort it."""
        assert self.manifest is not None
        started = time.monotonic()
        results = event_all(phase, self._active(), call, EVENT_TIMEOUT, cancellable=True)
        culprit = record_failures(phase, results, EVENT_TIMEOUT)
        if culprit is not None:
            raise self._abort(*culprit)
        self.manifest.phases[phase] = round(time.monotonic() - started, 6)

    @contextlib.contextmanager
    def _aborting(self) -> Iterator[None]:
        """The set aborted when the hold breaks inside the block."""
        try:
            yield
        except HoldBroken as broken:
            raise self._abort(broken.message, broken.cause) from broken.cause

    # ---- abort ---------------------------------------------------------------------------------

    def _abort(self, message: str, cause: BaseException | None = None) -> ShadowvaultError:
        """Release everything (every writer gets abort), mark the set aborted; return the error to raise."""
        assert self.manifest is not None
        self._aborted = True
        started = time.monotonic()
        if self.hold is not None:
            self.hold.release()
        self.commits.delete(self.manifest.shadows)
        self.manifest.shadows = []
        if self.hold is not None:
            self.hold.close_window()
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

    # ---- the sequence ----------------------------------------------------------------------------

    def create(self) -> ShadowSetManifest:
        """Run the sequence up to post_snapshot; the manifest of the created set (ShadowError if aborted)."""
        volumes = planning.resolve_volumes(self.volume_args)
        all_volumes = list_volumes(with_uuid=False)
        self.commits = Commits(planning.choose_providers(volumes, self.options.provider))
        self.runs = planning.make_runs(volumes, self.options)
        planning.check_freeze_policies(self.runs, volumes, self.commits.providers)
        freezer_targets = planning.freezer_targets(self.runs, volumes)

        self.manifest = ShadowSetManifest(
            id=self.store.new_id(),
            created=time.time(),
            host=socket.gethostname(),
            persistent=self.options.persistent,
            requester_pid=os.getpid(),  # until created: a dead creator's leftovers get reaped
            requester_uid=os.getuid() if self.options.requester_uid is None else self.options.requester_uid,
            client_pid=None if self.options.persistent else self.options.client_pid,
            provider=self.options.provider_name,
        )
        self.ctx = SnapshotContext(
            set_id=self.manifest.id, volumes=volumes, backup_type=self.options.backup_type
        )
        self.hold = Hold(self.runs, self.ctx, self.options, self.manifest, freezer_targets)
        with set_locks(volumes, self.runs):  # sets sharing a volume or a writer: one at a time, machine-wide
            try:
                return self._sequence(volumes, all_volumes)
            except BaseException as err:
                if not self._aborted:  # an interrupt, or an error outside the writers' and providers' events
                    self._abort(f"interrupted: {reason(err)}")
                raise

    def _sequence(self, volumes: list[Volume], all_volumes: list[Volume]) -> ShadowSetManifest:
        assert self.manifest is not None and self.ctx is not None and self.hold is not None
        ctx, hold = self.ctx, self.hold
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
        release_degraded(self.runs, ctx)

        with self._aborting():
            hold.start_watchdog()
            hold.freeze()
        self._commit(volumes)
        held = hold.frozen_volumes()
        with self._aborting():
            hold.thaw()
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

    def _commit(self, volumes: list[Volume]) -> None:
        assert self.manifest is not None and self.hold is not None
        started = time.monotonic()
        try:
            self.commits.commit(
                volumes,
                self.manifest.id,
                self.options.commit_timeout,
                self.manifest.shadows,
                self.options.scope,
            )
        except CommitFailed as failed:
            raise self._abort(failed.message, failed.cause) from failed.cause
        self.manifest.phases["commit"] = round(time.monotonic() - started, 6)
        with self._aborting():
            self.hold.check_watchdog("commit")

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
