"""The qemu writer: a running QEMU guest backed up through its hypervisor, no backup agent inside.

Hyper-V's VSS writer, for QEMU. The point in time is one QMP `transaction`: for every disk a new
persistent dirty bitmap starts and a `blockdev-backup` job begins (sync=full, or sync=bitmap from
the bitmap of the base snapshot). When the guest agent answers, `guest-fsfreeze-freeze` comes first
(the guest's own freeze hooks run: application-consistent inside the guest) and
`guest-fsfreeze-thaw` follows at once; the copy then runs while the guest writes on (QEMU copies a
block before the guest overwrites it). Without an agent the copy is crash-consistent, and the
writer says so. The requester reads the copies after post_snapshot (metadata names them) and calls
backup_complete: on success each copied disk's base bitmap is dropped and the new one is the next
backup's base; on failure the new one is dropped and the base still covers every change. Each
disk has its own base (the repository's last snapshot holding it), and each repository its own
bitmaps (vm/bitmaps.py): a disk left out of a backup, or backed up into another repository, keeps
its base.

A guest QEMU holds stopped (paused, started with -S, ...) runs no code: it is copied as it stands,
crash-consistent, without asking its agent, and never resumed; a migration or a savevm owning the
disks refuses the backup (vm/run_state.py). A lost QMP connection fails the event; abort then
reconnects, cancels the jobs, detaches the targets and drops the new bitmaps. The guest is never
paused, and a frozen guest is thawed by abort or, if this process dies while it is frozen, by the
watchdog (`python -m shadowvault.vm.release`).

This module holds the writer's events; finding, reaching and describing the VM is qemu_vm.py's,
the QEMU objects of the copy (targets, the transaction, bitmaps) vm/copy_jobs.py's.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from typing import Any

from shadowvault import paths
from shadowvault.errors import ShadowvaultError, UnsupportedError, UsageError, WriterError
from shadowvault.shadow.writers.base import RunCommand, SnapshotContext, WatchdogAction
from shadowvault.shadow.writers.qemu_vm import NOT_RUNNING, QemuVm
from shadowvault.vm import copy_jobs, release, run_state
from shadowvault.vm.agent import AgentError
from shadowvault.vm.copy_jobs import DiskCopy
from shadowvault.vm.discovery import VmSpec
from shadowvault.vm.disks import DiskBase, DiskInfo, choose_disks, list_disks, usable_base
from shadowvault.vm.qmp import QmpClient, QmpError, monitor_gone

log = logging.getLogger(__name__)

COPY_TIMEOUT = 6 * 3600.0
RELEASE_TIMEOUT = 180.0  # the watchdog's thaw retries until a freeze under way in the guest has ended
QUIT_GRACE = 3.0  # seconds a QEMU whose copy jobs ended early gets to show it is exiting


class QemuWriter(QemuVm):
    """A running QEMU guest backed up through its QMP monitor (instance = the VM's name)."""

    def __init__(
        self,
        instance: str | None = None,
        *,
        disks: list[str] | None = None,
        work_dir: str | None = None,
        bases: dict[str, DiskBase] | None = None,
        owner: str = "",
        full: bool = False,
        agent_timeout: float = 10.0,
        on_agent_failure: str = "degrade",
        copy_timeout: float = COPY_TIMEOUT,
        copy_speed: int = 0,
        keeps_copies: bool = False,
        spec: VmSpec | None = None,
        **options: Any,
    ) -> None:
        if not instance:
            raise UsageError("the qemu writer needs a VM: --writer qemu:NAME (see `writers list`)")
        if on_agent_failure not in ("degrade", "abort"):
            raise UsageError("on_agent_failure must be degrade or abort")
        if keeps_copies and not owner:
            raise UsageError("a VM backup names the repository that owns its bitmaps (owner)")
        super().__init__(instance, spec=spec, agent_timeout=agent_timeout, **options)
        self.wanted_disks = list(disks or [])
        self.work_dir = work_dir
        self.bases = dict(bases or {})  # disk -> its base; kept even when not used (full, not chosen)
        self.owner = owner  # whose bitmaps this backup makes and replaces (bitmaps.owner_of_repository)
        self.full = full
        self.on_agent_failure = on_agent_failure
        self.copy_timeout = copy_timeout
        self.copy_speed = copy_speed  # bytes/s for QEMU's copy jobs, 0 for no limit
        # whether the requester stores the copies (the VM backup job); any other set would only make
        # copies nobody reads, and rotate the bitmaps of the VM's backups
        self.keeps_copies = keeps_copies
        self.timeout = agent_timeout  # the thaw goes through the agent
        self.copies: list[DiskCopy] = []
        self.excluded: list[DiskInfo] = []
        self.left_out: list[str] = []  # disks it could capture that --vm-disk did not name
        self.stopped: str | None = None  # why the guest runs no code (run_state.STOPPED), None: it runs
        self.guest_frozen = False
        self.consistency = "crash"
        self.warnings: list[str] = []
        self.freeze_window: float | None = None
        self._frozen_at = 0.0
        self._own_work_dir = False

    # ---- the sequence -----------------------------------------------------------------------------

    def prepare_backup(self, ctx: SnapshotContext) -> None:
        if not self.keeps_copies:
            raise UsageError(
                f"the qemu writer copies VM disks for `shadowvault vm backup {self.instance}`; "
                "it does not take part in file backups or shadow sets of volumes"
            )
        qmp = self._connect()
        self._check_state(qmp)
        cleaned, evicted = copy_jobs.clean_leftovers(qmp, self.owner, self._base_names())
        if cleaned:
            log.warning("VM %s: removed what an earlier backup left: %s", self.instance, ", ".join(cleaned))
        if evicted:  # not this backup's concern: another repository's next backup is a full copy
            log.info("VM %s: bitmaps of other repositories dropped: %s", self.instance, ", ".join(evicted))
        assert self.instance
        found = list_disks(qmp)
        capturable, self.excluded = choose_disks(self.instance, found, self.wanted_disks)
        self.left_out = [d.name for d in found if not d.excluded and d not in capturable]
        for disk in self.excluded:
            self._warn(f"VM {self.instance}: disk {disk.name} excluded: {disk.excluded}")
        if self.work_dir is None:
            base = paths.state_dir() / "vm-copies"
            base.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.work_dir = tempfile.mkdtemp(prefix=f"{ctx.set_id[:12]}-", dir=base)
            self._own_work_dir = True
        self.copies = []
        for disk in capturable:
            bitmap = None if self.full else usable_base(qmp, disk, self.bases.get(disk.name))
            self.copies.append(copy_jobs.plan_copy(disk, self.work_dir, ctx.set_id, self.owner, bitmap))
        self.agent_state = self._ask_agent(self.status)
        if self.stopped is not None:
            note = run_state.stopped_note(self.instance, self.stopped, self.agent_state == NOT_RUNNING)
            if self.agent_state == NOT_RUNNING:  # it would have frozen the guest: the grade is lower
                self._warn(note)
            else:
                log.info("%s", note)
        if self.agent_state == "no answer":
            message = f"VM {self.instance}: the guest agent does not answer"
            if self.on_agent_failure == "abort":
                raise WriterError(message)
            self._warn(message + "; the copy is crash-consistent")

    def preflight(self) -> None:
        """Refuse, before any shadow set, a backup that `--vm-disk` or the VM's state rules out, in
        one line of its own (a disk it does not have: exit 2), not as a writer's failure."""
        qmp = self._connect()
        try:
            self._check_state(qmp)
            assert self.instance
            choose_disks(self.instance, list_disks(qmp), self.wanted_disks)
        finally:
            self._close()

    def _check_state(self, qmp: QmpClient) -> None:
        """QEMU's run state: a running guest, or one stopped in a state a backup can copy (crash-
        consistent: its agent cannot freeze it, which `--on-agent-failure abort` refuses)."""
        assert self.instance
        self.status = str(qmp.execute("query-status").get("status", ""))
        self.stopped = run_state.guest_stopped(self.instance, self.status)
        if self.stopped is not None and self._spec().agent and self.on_agent_failure == "abort":
            raise UnsupportedError(
                f"VM {self.instance} is {self.stopped}: its guest agent cannot freeze a guest that "
                "does not run (--on-agent-failure abort)"
            )

    def _warn(self, message: str) -> None:
        """A warning for the requester: the VM backup job shows each one once (metadata's `warnings`)."""
        self.warnings.append(message)
        log.info("%s", message)

    def prepare_snapshot(self, ctx: SnapshotContext) -> None:
        qmp = self._connect()
        for copy in self.copies:
            copy_jobs.create_target(qmp, copy)

    def freeze(self, ctx: SnapshotContext) -> None:
        qmp = self._connect()
        self._frozen_at = time.monotonic()
        agent = self._agent() if self.agent_state == "answers" else None
        if agent is not None:
            try:
                # the guest's hooks may take a while; the transaction must still fit in the freeze timeout
                agent.execute("guest-fsfreeze-freeze", timeout=max(1.0, 0.75 * self.freeze_timeout))
                self.guest_frozen = True
            except AgentError as err:
                agent.close()
                self._thaw_later()  # a freeze that timed out may still complete in the guest
                if self.on_agent_failure == "abort":
                    raise WriterError(f"VM {self.instance}: the guest did not freeze: {err}") from err
                self._warn(
                    f"VM {self.instance}: the guest did not freeze ({err}); the copy is crash-consistent"
                )
        try:
            copy_jobs.start_copies(qmp, self.copies, self.copy_speed)
        except QmpError as err:
            self._thaw_guest()
            raise WriterError(f"VM {self.instance}: the point-in-time transaction failed: {err}") from err
        self.consistency = "application" if self.guest_frozen else "crash"

    def _thaw_later(self) -> None:
        """A freeze that did not answer in time may still complete in the guest: thawed once it has."""
        spec = self._spec()
        if spec.agent is not None:
            release.thaw_later(spec.agent)

    def thaw(self, ctx: SnapshotContext) -> None:
        self._thaw_guest()

    def _thaw_guest(self) -> None:
        if self._frozen_at and self.freeze_window is None:
            self.freeze_window = round(time.monotonic() - self._frozen_at, 6)
        if not self.guest_frozen:
            return
        agent = self._agent()
        assert agent is not None
        try:
            agent.execute("guest-fsfreeze-thaw", timeout=self.agent_timeout)
        except AgentError:
            agent.close()
            agent.execute("guest-fsfreeze-thaw", timeout=self.agent_timeout)  # one retry on a fresh channel
        self.guest_frozen = False

    def post_snapshot(self, ctx: SnapshotContext) -> None:
        try:
            qmp = self._connect()
            copy_jobs.wait_copies(qmp, self.copies, self.copy_timeout)
            for copy in self.copies:
                copy_jobs.detach(qmp, copy)  # flushed and closed: the requester reads the file
        except (QmpError, WriterError) as err:
            if self._qemu_gone():
                raise WriterError(
                    f"VM {self.instance}: its QEMU exited while its disks were copied; "
                    "this backup of it was abandoned"
                ) from err
            raise

    def _qemu_gone(self) -> bool:
        """Whether the VM's QEMU has exited (its monitor socket no longer listens). A QEMU that quits
        cleanly cancels the copy jobs first, so that is given a moment to show."""
        deadline = time.monotonic() + QUIT_GRACE
        while not monitor_gone(self._spec().qmp):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def backup_complete(self, ctx: SnapshotContext, succeeded: bool) -> None:
        try:
            qmp = self._connect()
            for copy in self.copies:
                copy_jobs.detach(qmp, copy)
                if succeeded:
                    copy_jobs.rotate_bitmaps(qmp, copy, self._base_names())
                else:
                    copy_jobs.remove_bitmap(qmp, copy.disk.node, copy.new_bitmap)
        finally:
            self._remove_copies()
            self._close()

    def abort(self, ctx: SnapshotContext) -> None:
        """Thaw the guest, cancel the jobs, detach the targets, drop the new bitmaps (on a fresh monitor)."""
        problems = []
        try:
            self._thaw_guest()
        except ShadowvaultError as err:
            problems.append(str(err))
        if self.qmp is not None and not self.qmp.connected:
            self.qmp = None
        try:
            qmp = self._connect()
            for copy in self.copies:
                copy_jobs.cancel(qmp, copy)
        except QmpError as err:
            problems.append(str(err))
        finally:
            self._remove_copies()
            self._close()
        if problems and monitor_gone(self._spec().qmp):
            # its guest, jobs, targets and new bitmaps went with it: nothing was left to undo
            log.info("VM %s: QEMU has exited; nothing of the backup is left in it", self.instance)
            self.guest_frozen = False
            return
        if problems:
            raise WriterError(f"VM {self.instance}: abort: {'; '.join(problems)}")

    def _remove_copies(self) -> None:
        for copy in self.copies:
            copy_jobs.remove_files(copy)
        if self._own_work_dir and self.work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def watchdog_actions(self) -> list[WatchdogAction]:
        spec = self._spec()
        if spec.agent is None or self.agent_state != "answers":
            return []
        argv = release.release_argv(spec.agent, spec.qmp, self.owner, self._base_names())
        return [RunCommand(argv=argv, timeout=RELEASE_TIMEOUT)]

    def _base_names(self) -> set[str]:
        return {base.bitmap for base in self.bases.values()}

    def metadata(self) -> dict[str, Any]:
        spec = self._spec()
        return {
            "vm": self.instance,
            "definition": spec.argv,
            "guest_agent": self.agent_state,
            "status": self.status,
            "guest_frozen": self.consistency == "application",
            "consistency": self.consistency,
            "freeze_window": self.freeze_window,
            "warnings": self.warnings,
            "excluded": {d.name: d.excluded for d in self.excluded},
            "left_out": self.left_out,
            "copies": [c.describe() for c in self.copies],
        }
