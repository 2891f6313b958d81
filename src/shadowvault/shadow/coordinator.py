"""The coordinator: runs the shadow-set sequence, enforces its timeouts, and guarantees the thaw.

    identify -> prepare_backup -> prepare_snapshot -> freeze -> commit (providers) -> thaw
             -> post_snapshot -> [the requester reads the shadows] -> backup_complete -> release

Rules it keeps (DESIGN.md, vss.md 1.2-1.3):
- Every writer event runs in a worker thread with a timeout; the coordinator's own thread never
  blocks on a frozen filesystem, so it can always thaw.
- Application writers freeze together (concurrently); filesystem freezes (fsfreeze) come after them
  and thaw first. The freeze timeout (default 60 s) covers the whole freeze phase; providers must
  commit within the commit timeout (default 10 s). Past either, or when a writer with
  on_failure=abort fails, the set is aborted: every writer gets abort, nothing stays frozen or
  held, and the ShadowError names the writer or provider and the phase. A writer with
  on_failure=degrade that fails leaves its components crash-consistent and the set goes on.
- The commit happens inside the hold for every provider. For reflink (not atomic) that means the
  whole copy runs while writers hold, so writer data is consistent and the freeze window includes
  the copy. With the live provider nothing is copied: the requester reads live files after thaw,
  so no component is better than `none` (fsfreeze adds nothing there; the manifest says so).
- fsfreeze is never combined with a provider that forbids it (btrfs, reflink: a snapshot or a
  reflink of a frozen filesystem blocks until thaw): such a request is refused before anything
  is frozen, with an error naming both.
- A watchdog process (watchdog.py) gets every writer's WatchdogActions before the first freeze and
  performs them if this process dies or the deadline passes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from typing import Any

from shadowvault.errors import ShadowError, ShadowvaultError, UsageError
from shadowvault.shadow.manifest import (
    Component,
    Consistency,
    Shadow,
    ShadowSetManifest,
    WriterReport,
    WriterState,
)
from shadowvault.shadow.providers.base import FreezePolicy, Provider
from shadowvault.shadow.volumes import Volume, find_volume, list_volumes, volume_of
from shadowvault.shadow.watchdog import Watchdog, WatchdogStartError
from shadowvault.shadow.writers.base import FailurePolicy, SnapshotContext, Writer

log = logging.getLogger(__name__)

DEFAULT_FREEZE_TIMEOUT = 60.0
DEFAULT_COMMIT_TIMEOUT = 10.0
EVENT_TIMEOUT = 300.0  # identify, prepare_*, post_snapshot, backup_complete: slow work is allowed there
THAW_TIMEOUT = 60.0  # a writer's thaw (scripts bring their own timeout, up to 1800 s)
WATCHDOG_GRACE = 30.0  # past freeze + commit timeouts, before the watchdog thaws on its own
ABORT_COMMIT_WAIT = 5.0  # an abort waits this long at most for a running commit (within its timeout)

FAILED_AT = {
    "identify": WriterState.FAILED_AT_IDENTIFY,
    "prepare_backup": WriterState.FAILED_AT_PREPARE_BACKUP,
    "prepare_snapshot": WriterState.FAILED_AT_PREPARE_SNAPSHOT,
    "freeze": WriterState.FAILED_AT_FREEZE,
    "thaw": WriterState.FAILED_AT_THAW,
    "post_snapshot": WriterState.FAILED_AT_POST_SNAPSHOT,
    "backup_complete": WriterState.FAILED_AT_BACKUP_COMPLETE,
}


def _in_thread(fn: Callable[..., Any], *args: Any, name: str = "writer-event") -> Future:
    """Run `fn(*args)` in a daemon thread (an abandoned, hung call must not block exit)."""
    future: Future = Future()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as err:
            future.set_exception(err)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


def _reason(err: BaseException) -> str:
    return str(err) or type(err).__name__


def shadow_path(manifest: ShadowSetManifest, original_path: str) -> str:
    """Where the live absolute path `original_path` is found inside the set's shadows."""
    path = os.path.abspath(original_path)
    best: Shadow | None = None
    for shadow in manifest.shadows:
        mp = shadow.volume
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and (
            best is None or len(mp) > len(best.volume)
        ):
            best = shadow
    if best is None:
        raise UsageError(f"{original_path} is not on any volume of shadow set {manifest.id}")
    rel = os.path.relpath(path, best.volume)
    return best.path if rel == "." else os.path.join(best.path, rel)


class _WriterRun:
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
        return bool(getattr(self.writer, "freezes_filesystems", False))

    def fail(self, phase: str, state: WriterState, reason: str) -> None:
        self.report.state = state
        self.report.failure = f"{phase}: {reason}"


class ShadowSetRun:
    """One shadow set from start to release. Use `shadow_set()` or `create_shadow_set()`."""

    def __init__(
        self,
        volumes: Sequence[str],
        writers: Sequence[str | Writer] = (),
        provider: str | Provider = "auto",
        *,
        persistent: bool = False,
        auto_writers: bool = True,
        freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT,
        commit_timeout: float = DEFAULT_COMMIT_TIMEOUT,
        backup_type: str = "full",
    ) -> None:
        if not volumes:
            raise UsageError("a shadow set needs at least one volume (--volume MOUNT_POINT)")
        if freeze_timeout <= 0 or commit_timeout <= 0:
            raise UsageError("timeouts must be positive numbers of seconds")
        self.volume_args = list(volumes)
        self.writer_specs = list(writers)
        self.requested_provider = provider
        self.persistent = persistent
        self.auto_writers = auto_writers
        self.freeze_timeout = freeze_timeout
        self.commit_timeout = commit_timeout
        self.backup_type = backup_type
        self.runs: list[_WriterRun] = []
        self.providers: dict[str, Provider] = {}
        self.watchdog: Watchdog | None = None
        self.store: Any = None
        self.ctx: SnapshotContext | None = None
        self.manifest: ShadowSetManifest | None = None
        self._freeze_start: float | None = None
        self._aborted = False
        self._late_shadows: list[tuple[Provider, Future]] = []  # commits whose shadow is not in the manifest
        self._commit_deadline = 0.0
        self._thaw_running: tuple[Future, float] | None = None  # a writer's thaw and its deadline

    # ---- planning (nothing held yet) ----------------------------------------------------------

    def _resolve_volumes(self) -> list[Volume]:
        volumes: list[Volume] = []
        for arg in self.volume_args:
            volume = find_volume(arg)
            if volume.mount_point not in {v.mount_point for v in volumes}:
                volumes.append(volume)
        return volumes

    def _choose_providers(self, volumes: list[Volume]) -> None:
        from shadowvault.shadow.providers import registry as providers

        for volume in volumes:
            if isinstance(self.requested_provider, Provider):
                self.providers[volume.mount_point] = self.requested_provider
            else:
                self.providers[volume.mount_point] = providers.choose_provider(
                    volume, self.requested_provider
                )

    def _make_writers(self, volumes: list[Volume]) -> None:
        from shadowvault.shadow.writers import registry as writers

        chosen: dict[str, Writer] = {}
        for spec in self.writer_specs:
            writer = spec if isinstance(spec, Writer) else writers.make_writer(spec)
            chosen.setdefault(writer.label, writer)
        if self.auto_writers:
            for writer in writers.discover_writers(volumes):
                chosen.setdefault(writer.label, writer)
        # Application writers first, filesystem freezers last (they freeze last and thaw first).
        ordered = sorted(chosen.values(), key=lambda w: bool(getattr(w, "freezes_filesystems", False)))
        self.runs = [_WriterRun(w) for w in ordered]

    def _check_freeze_policies(self, volumes: list[Volume]) -> None:
        """Refuse fsfreeze on a volume whose provider forbids it, before anything is frozen."""
        for run in self.runs:
            if not run.is_filesystem_freezer:
                continue
            targets = [run.writer.instance] if run.writer.instance else [v.mount_point for v in volumes]
            for target in targets:
                mount = find_volume(target).mount_point
                provider = self.providers.get(mount)
                if provider is not None and provider.freeze_policy == FreezePolicy.FORBIDS:
                    raise UsageError(
                        f"writer {run.label} cannot be used with provider {provider.name} on {mount}: a "
                        f"{provider.name} shadow of a frozen filesystem blocks until thaw (a deadlock); "
                        f"{provider.name} needs no fsfreeze, leave out --writer fsfreeze or use "
                        "--provider live"
                    )

    def _check_writer_volumes(self, volumes: list[Volume], all_volumes: list[Volume]) -> None:
        """A writer's data must lie on the set's volumes (VSS: the requester adds every volume)."""
        mounts = {v.mount_point for v in volumes}
        for run in self.runs:
            if run.is_filesystem_freezer:
                continue
            for component in run.report.components:
                for path in component.paths:
                    if not os.path.exists(path):
                        continue
                    holder = volume_of(path, all_volumes).mount_point
                    if holder not in mounts:
                        raise UsageError(
                            f"writer {run.label}: {path} lies on {holder}, which is not in the shadow set "
                            f"(add --volume {holder})"
                        )

    # ---- events -------------------------------------------------------------------------------

    def _event_all(
        self, phase: str, runs: list[_WriterRun], call: Callable[[_WriterRun], Any], timeout: float
    ) -> list[tuple[_WriterRun, BaseException | None, bool]]:
        """Run one event on `runs` concurrently; (run, error, timed_out) for each, in order."""
        futures = [(run, _in_thread(call, run, name=f"{phase}:{run.label}")) for run in runs]
        started = time.monotonic()
        wait_futures([f for _, f in futures], timeout=timeout)
        results = []
        for run, future in futures:
            elapsed = time.monotonic() - started
            if not future.done():
                run.report.timings[phase] = round(elapsed, 6)
                results.append((run, None, True))
            else:
                results.append((run, future.exception(), False))
        return results

    def _timed(self, phase: str, run: _WriterRun, fn: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            return fn()
        finally:
            run.report.timings[phase] = round(time.monotonic() - started, 6)

    def _handle(
        self, phase: str, results: list[tuple[_WriterRun, BaseException | None, bool]], timeout: float
    ) -> None:
        """Record failures of `phase`; abort the set for the first that must abort it."""
        culprit: tuple[_WriterRun, str, BaseException | None] | None = None
        for run, error, timed_out in results:
            if timed_out:
                message = f"writer {run.label} timed out at {phase} after {timeout:.1f} s"
                run.fail(phase, WriterState.TIMED_OUT, f"timed out after {timeout:.1f} s")
            elif error is not None:
                message = f"writer {run.label} failed at {phase}: {_reason(error)}"
                run.fail(phase, FAILED_AT.get(phase, WriterState.ABORTED), _reason(error))
            else:
                continue
            if run.writer.failure_policy == FailurePolicy.DEGRADE and phase not in ("identify",):
                log.warning("%s; going on without it (its data is only crash-consistent)", message)
                run.degraded = True
                continue
            if culprit is None:
                culprit = (run, message, error)
        if culprit is not None:
            _, message, error = culprit
            raise self._abort(message, error)

    def _release_degraded(self) -> None:
        """A degraded writer is out of the set: release whatever it may hold, now."""
        assert self.ctx is not None
        for run in self.runs:
            if run.degraded and (run.freeze_started or run.held):
                run.held = False
                future = _in_thread(run.writer.abort, self.ctx, name=f"abort:{run.label}")
                wait_futures([future], timeout=THAW_TIMEOUT)

    def _active(self) -> list[_WriterRun]:
        return [run for run in self.runs if not run.degraded]

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
            stuck = []
            # Filesystems first, one by one (a thaw script may need to write); then every
            # application writer at once, so one slow thaw does not delay the others.
            fs_runs = [r for r in self.runs if r.is_filesystem_freezer]
            app_runs = [r for r in self.runs if not r.is_filesystem_freezer]
            for group in [[r] for r in fs_runs] + [app_runs]:
                futures = [(r, _in_thread(r.writer.abort, self.ctx, name=f"abort:{r.label}")) for r in group]
                wait_futures([f for _, f in futures], timeout=THAW_TIMEOUT)
                for run, future in futures:
                    if not future.done():
                        stuck.append(run.label)
                    elif future.exception() is not None:
                        log.warning("writer %s: abort failed: %s", run.label, future.exception())
                    run.held = False
                    if not run.report.state.failed:
                        run.report.state = WriterState.ABORTED
            if self.watchdog is not None:
                if stuck:  # our own release hung: let the watchdog do what it can
                    self.watchdog.fire()
                else:
                    self.watchdog.thawed()
                self.watchdog = None
        self._delete_shadows()
        self._finish_freeze_window()
        self.manifest.phases["abort"] = round(time.monotonic() - started, 6)
        self.manifest.state = "aborted"
        self.manifest.writers = [run.report for run in self.runs]
        self.manifest.notes.append(f"aborted: {message}")
        self._forget_in_store()
        error_type = (
            type(cause)
            if isinstance(cause, ShadowvaultError) and not isinstance(cause, ShadowError)
            else ShadowError
        )
        try:
            error = error_type(message)
        except TypeError:
            error = ShadowError(message)
        error.manifest = self.manifest  # type: ignore[attr-defined]
        return error

    def _delete_shadows(self) -> None:
        assert self.manifest is not None
        for shadow in self.manifest.shadows:
            provider = self.providers.get(shadow.volume)
            if provider is None:
                continue
            try:
                provider.delete(shadow)
            except Exception as err:
                log.warning("cannot delete the shadow of %s: %s", shadow.volume, err)
        self.manifest.shadows = []
        # Commits still running (interrupted, or past their timeout) are cancelled and get what is
        # left of the commit timeout, up to ABORT_COMMIT_WAIT, to end: a btrfs snapshot ends in
        # milliseconds, a cancelled reflink copy within a few files, and its image is deleted here.
        # One still running after that is deleted when it ends, if this process lives that long;
        # if not, reap() deletes it (the store has its path as the set's intent, or finds it).
        for provider, future in self._late_shadows:
            if not future.done():
                provider.cancel()
                remaining = min(self._commit_deadline - time.monotonic(), ABORT_COMMIT_WAIT)
                wait_futures([future], timeout=max(remaining, 0))
            if future.done():
                _delete_late(provider, future)
            else:
                future.add_done_callback(lambda f, p=provider: _delete_late(p, f))
        self._late_shadows = []

    def _forget_in_store(self) -> None:
        if self.store is None or self.manifest is None:
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
                f"the watchdog released the set at its deadline during {phase} "
                f"(freeze timeout {self.freeze_timeout:g} s + commit timeout {self.commit_timeout:g} s)"
            )

    # ---- the sequence ----------------------------------------------------------------------------

    def create(self) -> ShadowSetManifest:
        from shadowvault.shadow import store as store_module

        volumes = self._resolve_volumes()
        all_volumes = list_volumes(with_uuid=False)
        self._choose_providers(volumes)
        self._make_writers(volumes)
        self._check_freeze_policies(volumes)

        self.store = store_module.ShadowStore()
        self.manifest = ShadowSetManifest(
            id=self.store.new_id(),
            created=time.time(),
            host=socket.gethostname(),
            persistent=self.persistent,
            requester_pid=os.getpid(),  # until created: a dead creator's leftovers get reaped
            provider=self.requested_provider
            if isinstance(self.requested_provider, str)
            else self.requested_provider.name,
        )
        self.ctx = SnapshotContext(set_id=self.manifest.id, volumes=volumes, backup_type=self.backup_type)
        try:
            return self._sequence(volumes, all_volumes)
        except BaseException as err:
            if not self._aborted:  # an interrupt, or an error outside the writers' and providers' events
                self._abort(f"interrupted: {_reason(err)}")
            raise

    def _sequence(self, volumes: list[Volume], all_volumes: list[Volume]) -> ShadowSetManifest:
        from shadowvault.shadow import store as store_module

        assert self.manifest is not None and self.ctx is not None
        ctx = self.ctx
        phases: dict[str, float] = {}
        for run in self.runs:
            run.writer.freeze_timeout = min(run.writer.freeze_timeout, self.freeze_timeout)

        # identify and prepare_backup: failures here abort before anything is held.
        def identify(run: _WriterRun) -> None:
            run.report.components = list(self._timed("identify", run, run.writer.identify))

        def prepare_backup(run: _WriterRun) -> None:
            self._timed("prepare_backup", run, lambda: run.writer.prepare_backup(ctx))
            run.report.components = list(run.writer.identify())  # as the writer sees them now

        for phase, call in (("identify", identify), ("prepare_backup", prepare_backup)):
            started = time.monotonic()
            self._handle(phase, self._event_all(phase, self._active(), call, EVENT_TIMEOUT), EVENT_TIMEOUT)
            phases[phase] = round(time.monotonic() - started, 6)
        self._check_writer_volumes(volumes, all_volumes)

        self.store.reap([v.mount_point for v in volumes])  # also orphan images on these volumes
        for volume in volumes:
            self.store.enforce_limit(volume.mount_point, store_module.max_shadows_per_volume())
        self.manifest.phases = phases
        self.manifest.writers = [run.report for run in self.runs]
        self.store.save(self.manifest)
        # Before anything is frozen, the paths the providers will create: if we die at any moment from
        # here on, reap() deletes them, made or not (a write now does not lengthen the freeze window).
        self.store.record_intent(self.manifest.id, self._planned_shadows(volumes))

        started = time.monotonic()
        results = self._event_all(
            "prepare_snapshot",
            self._active(),
            lambda r: self._timed("prepare_snapshot", r, lambda: r.writer.prepare_snapshot(ctx)),
            EVENT_TIMEOUT,
        )
        self._handle("prepare_snapshot", results, EVENT_TIMEOUT)
        phases["prepare_snapshot"] = round(time.monotonic() - started, 6)
        self._release_degraded()

        self._start_watchdog()
        self._freeze()
        self._commit(volumes)
        self._thaw()
        # Record the shadows at once (still `creating`): if we die from here on, reap() finds and
        # deletes them. Not earlier: a write to the state directory would lengthen the freeze window.
        self.manifest.writers = [run.report for run in self.runs]
        self.store.save(self.manifest)
        self._post_snapshot()
        self._grade(volumes)
        self.manifest.state = "created"
        if self.persistent:
            self.manifest.requester_pid = None  # kept until deleted, whoever made it
        self.manifest.writers = [run.report for run in self.runs]
        self.store.save(self.manifest)
        self.store.clear_intent(self.manifest.id)  # the record lists every shadow now
        return self.manifest

    def _planned_shadows(self, volumes: list[Volume]) -> list[Shadow]:
        assert self.manifest is not None
        planned = []
        for index, volume in enumerate(volumes):
            shadow = self.providers[volume.mount_point].planned(volume, self.manifest.id, index)
            if shadow is not None:
                planned.append(shadow)
        return planned

    def _start_watchdog(self) -> None:
        actions = []
        # Thaw order: filesystems first (the watchdog does thaw_fs before commands anyway).
        for run in sorted(self._active(), key=lambda r: not r.is_filesystem_freezer):
            actions.extend(run.writer.watchdog_actions())
        if not actions:
            return  # every hold dies with this process (database sessions, locks)
        # Past our own timeouts, and past the longest thaw a writer may legitimately take.
        longest_thaw = max((float(getattr(r.writer, "timeout", 0) or 0) for r in self._active()), default=0)
        grace = WATCHDOG_GRACE + longest_thaw
        deadline = time.monotonic() + self.freeze_timeout + self.commit_timeout + grace
        try:
            self.watchdog = Watchdog.start(actions, deadline)
        except WatchdogStartError as err:
            raise self._abort(f"cannot freeze without a watchdog: {err}") from err

    def _freeze(self) -> None:
        assert self.manifest is not None and self.ctx is not None
        ctx = self.ctx
        phase_deadline = time.monotonic() + self.freeze_timeout
        self._freeze_start = time.monotonic()
        self.manifest.frozen_at = time.time()
        app = [r for r in self._active() if not r.is_filesystem_freezer]
        fs = [r for r in self._active() if r.is_filesystem_freezer]

        def freeze(run: _WriterRun) -> None:
            run.freeze_started = True
            run.report.state = WriterState.WAITING_FOR_FREEZE
            self._timed("freeze", run, lambda: run.writer.freeze(ctx))
            run.held = True
            run.report.state = WriterState.FROZEN

        for group in (app, fs):
            if not group:
                continue
            self._check_watchdog("freeze")  # never freeze more once the watchdog has given up on us
            if group is fs:  # filesystem freezes go one after another, each within what is left
                for run in group:
                    remaining = max(phase_deadline - time.monotonic(), 0.001)
                    self._handle(
                        "freeze", self._event_all("freeze", [run], freeze, remaining), self.freeze_timeout
                    )
            else:
                remaining = max(phase_deadline - time.monotonic(), 0.001)
                self._handle(
                    "freeze", self._event_all("freeze", group, freeze, remaining), self.freeze_timeout
                )
            self._release_degraded()
        self.manifest.phases["freeze"] = round(time.monotonic() - self._freeze_start, 6)
        self._check_watchdog("freeze")

    def _commit(self, volumes: list[Volume]) -> None:
        assert self.manifest is not None
        started = time.monotonic()
        deadline = started + self.commit_timeout
        self._commit_deadline = deadline
        for index, volume in enumerate(volumes):
            provider = self.providers[volume.mount_point]
            remaining = deadline - time.monotonic()
            future = _in_thread(
                provider.create, volume, self.manifest.id, index, name=f"commit:{provider.name}"
            )
            # Until it is in the manifest, a commit an interrupt leaves running is the abort's to clean up.
            self._late_shadows.append((provider, future))
            wait_futures([future], timeout=max(remaining, 0.001))
            if not future.done():
                raise self._abort(
                    f"provider {provider.name} timed out at commit on {volume.mount_point} after "
                    f"{self.commit_timeout:.1f} s"
                )
            error = future.exception()
            if error is not None:
                raise self._abort(
                    f"provider {provider.name} failed at commit on {volume.mount_point}: {_reason(error)}",
                    error,
                )
            shadow = future.result()
            self.manifest.shadows.append(shadow)
            self._late_shadows.remove((provider, future))
        self.manifest.phases["commit"] = round(time.monotonic() - started, 6)
        self._check_watchdog("commit")

    def _thaw(self) -> None:
        assert self.manifest is not None and self.ctx is not None
        ctx = self.ctx
        started = time.monotonic()
        fs_first = sorted((r for r in self._active() if r.held), key=lambda r: not r.is_filesystem_freezer)
        failures = []
        for run in fs_first:
            timeout = max(THAW_TIMEOUT, float(getattr(run.writer, "timeout", 0) or 0) + 5)
            future = _in_thread(
                lambda r=run: self._timed("thaw", r, lambda: r.writer.thaw(ctx)), name=f"thaw:{run.label}"
            )
            self._thaw_running = (future, time.monotonic() + timeout)
            wait_futures([future], timeout=timeout)
            self._thaw_running = None
            run.held = False
            if not future.done():
                run.fail("thaw", WriterState.TIMED_OUT, f"timed out after {timeout:.1f} s")
                failures.append(f"writer {run.label} timed out at thaw after {timeout:.1f} s")
            elif future.exception() is not None:
                run.fail("thaw", WriterState.FAILED_AT_THAW, _reason(future.exception()))
                failures.append(f"writer {run.label} failed at thaw: {_reason(future.exception())}")
            else:
                run.report.state = WriterState.WAITING_FOR_POST_SNAPSHOT
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
                "the watchdog released the set at its deadline before the thaw "
                f"(freeze timeout {self.freeze_timeout:g} s + commit timeout {self.commit_timeout:g} s)"
            )
        if failures:
            # VSS: a writer failing at thaw means its data in the shadow cannot be trusted.
            raise self._abort(failures[0])

    def _post_snapshot(self) -> None:
        assert self.manifest is not None and self.ctx is not None
        ctx = self.ctx
        ctx.shadows = list(self.manifest.shadows)
        started = time.monotonic()
        results = self._event_all(
            "post_snapshot",
            self._active(),
            lambda r: self._timed("post_snapshot", r, lambda: r.writer.post_snapshot(ctx)),
            EVENT_TIMEOUT,
        )
        self._handle("post_snapshot", results, EVENT_TIMEOUT)
        for run in self._active():
            run.report.state = WriterState.WAITING_FOR_BACKUP_COMPLETE
            with contextlib.suppress(Exception):
                run.report.metadata = dict(run.writer.metadata())
        self.manifest.phases["post_snapshot"] = round(time.monotonic() - started, 6)

    # ---- consistency grades ------------------------------------------------------------------

    def _grade(self, volumes: list[Volume]) -> None:
        from shadowvault.shadow.providers import registry as providers

        assert self.manifest is not None
        shadows = {s.volume: s for s in self.manifest.shadows}
        mounts = [v.mount_point for v in volumes]
        for run in self.runs:
            for component in run.report.components:
                grade, reason = _grade_component(component, run, shadows, mounts)
                component.consistency = grade
                component.reason = reason
        notes = []
        for shadow in self.manifest.shadows:
            for note in (
                providers.shadow_notes(shadow)
                if hasattr(providers, "shadow_notes")
                else [providers.consistency_note(shadow)]
            ):
                if note and note not in notes:
                    notes.append(note)
        if any(run.is_filesystem_freezer and not run.degraded for run in self.runs) and any(
            s.provider == "live" for s in self.manifest.shadows
        ):
            notes.append(
                "fsfreeze with the live provider adds nothing: the live files are read after the thaw"
            )
        if any(s.provider == "live" for s in self.manifest.shadows):
            notes.append(
                "live: the writers held their applications only during the freeze window; files are "
                "read afterwards while the applications run, so no component is better than 'none'"
            )
        for run in self.runs:
            if run.degraded:
                notes.append(
                    f"writer {run.label} failed ({run.report.failure}); its data is only crash-consistent"
                )
        self.manifest.notes.extend(n for n in notes if n not in self.manifest.notes)

    # ---- after the requester has read the shadows ---------------------------------------------------

    def complete(self, succeeded: bool) -> None:
        """backup_complete for every writer, then release the set unless it is persistent."""
        assert self.manifest is not None and self.ctx is not None
        ctx = self.ctx
        started = time.monotonic()
        results = self._event_all(
            "backup_complete",
            self._active(),
            lambda r: self._timed("backup_complete", r, lambda: r.writer.backup_complete(ctx, succeeded)),
            EVENT_TIMEOUT,
        )
        for run, error, timed_out in results:
            if timed_out or error is not None:
                reason = "timed out" if timed_out else _reason(error)
                run.fail("backup_complete", WriterState.FAILED_AT_BACKUP_COMPLETE, reason)
                log.warning("writer %s failed at backup_complete: %s", run.label, reason)
            else:
                run.report.state = WriterState.STABLE
        self.manifest.phases["backup_complete"] = round(time.monotonic() - started, 6)
        self.manifest.writers = [run.report for run in self.runs]
        if self.persistent:
            with contextlib.suppress(Exception):
                self.store.save(self.manifest)
            return
        self.store.release(self.manifest.id)
        self.manifest.state = "released"


def _delete_late(provider: Provider, future: Future) -> None:
    if future.exception() is None:
        try:
            provider.delete(future.result())
        except Exception as err:
            log.warning("cannot delete a late shadow: %s", err)


def _grade_component(
    component: Component, run: _WriterRun, shadows: dict[str, Shadow], mounts: list[str]
) -> tuple[Consistency, str]:
    """How trustworthy this component's copy is, and why, in words."""
    holders = []
    for path in component.paths:
        if not os.path.exists(path):
            continue
        best = max(
            (m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")), key=len, default=None
        )
        if best is None:
            return Consistency.NONE, f"{path} lies outside the shadow set"
        holders.append(shadows[best])
    if not holders:
        holders = list(shadows.values())
    if any(s.provider == "live" for s in holders):
        return Consistency.NONE, "live provider: read from the live files after the thaw"
    atomic = all(s.atomic for s in holders)
    if run.degraded or run.report.state.failed:
        if atomic:
            return Consistency.CRASH, f"writer failed ({run.report.failure}): as after a power cut"
        return Consistency.NONE, f"writer failed ({run.report.failure}) and the copy is not atomic"
    if run.is_filesystem_freezer:
        return Consistency.FILESYSTEM, "the filesystem was frozen while the shadow was taken"
    if atomic:
        return Consistency.APPLICATION, "held by its writer while the atomic shadow was taken"
    return Consistency.APPLICATION, "held by its writer for the whole copy"


def create_shadow_set(
    volumes: Sequence[str],
    writers: Sequence[str | Writer] = (),
    provider: str | Provider = "auto",
    *,
    persistent: bool = False,
    auto_writers: bool = True,
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT,
    commit_timeout: float = DEFAULT_COMMIT_TIMEOUT,
    backup_type: str = "full",
) -> ShadowSetManifest:
    """Create a shadow set and keep it (stored in the state directory); returns its manifest.

    No backup_complete is sent (nothing was backed up). A non-persistent set records this process
    as its requester and is reaped by the store once the process has ended.
    """
    run = ShadowSetRun(
        volumes,
        writers,
        provider,
        persistent=persistent,
        auto_writers=auto_writers,
        freeze_timeout=freeze_timeout,
        commit_timeout=commit_timeout,
        backup_type=backup_type,
    )
    manifest = run.create()
    for report in manifest.writers:
        if report.state == WriterState.WAITING_FOR_BACKUP_COMPLETE:
            report.state = WriterState.STABLE
    run.store.save(manifest)
    return manifest


@contextlib.contextmanager
def shadow_set(
    volumes: Sequence[str],
    writers: Sequence[str | Writer] = (),
    provider: str | Provider = "auto",
    *,
    persistent: bool = False,
    auto_writers: bool = True,
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT,
    commit_timeout: float = DEFAULT_COMMIT_TIMEOUT,
    backup_type: str = "full",
) -> Iterator[ShadowSetManifest]:
    """A shadow set for the duration of a `with` block: read the shadows inside it.

    On exit every writer gets backup_complete(succeeded = the block raised nothing), and the set
    is released unless `persistent`.
    """
    run = ShadowSetRun(
        volumes,
        writers,
        provider,
        persistent=persistent,
        auto_writers=auto_writers,
        freeze_timeout=freeze_timeout,
        commit_timeout=commit_timeout,
        backup_type=backup_type,
    )
    manifest = run.create()
    succeeded = False
    try:
        yield manifest
        succeeded = True
    finally:
        run.complete(succeeded)
