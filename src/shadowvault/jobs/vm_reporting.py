"""VM backups and restores as one call that reports in JSON: the same for the CLI and the daemon.

`backup_vm_reporting` and `restore_vm_reporting` run the VM jobs (jobs/backup_vm.py,
jobs/restore_vm.py, jobs/restore_vm_files.py) and return summaries made only of JSON values; the
backup's warnings go to `emit` as they come. The CLI prints these summaries (cli/vm_runs.py)
whether it ran the job itself or followed the daemon's run of it (service/vm_work.py), so the
output is the same either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shadowvault.errors import UsageError
from shadowvault.jobs.backup_vm import VmBackupRequest, run_vm_backup
from shadowvault.jobs.restore_vm import VmRestoreRequest, run_vm_restore, run_vm_restore_in_place
from shadowvault.jobs.restore_vm_files import restore_disk_path
from shadowvault.repo.repository import Repository

Emit = Callable[[str, dict[str, Any]], None]  # (message_type, event)


@dataclass
class VmRestoreOrder:
    """One VM restore: to `target` (whole VM, some disks, or `path` from inside one disk) or in place."""

    snapshot: str
    vm: str
    target: str | None = None
    in_place: bool = False
    disks: list[str] = field(default_factory=list)
    format: str = "qcow2"
    path: str | None = None  # a file or directory inside the one disk of `disks`
    verify_boot: bool = False
    boot_marker: str = "login:"
    boot_timeout: float = 300.0

    def check(self) -> None:
        """The combinations that make no restore, refused before anything is read."""
        if self.in_place == (self.target is not None):
            raise UsageError("give --target DIR or --in-place (over the stopped VM's images)")
        if self.path is not None and (self.in_place or len(self.disks) != 1):
            raise UsageError("--path needs exactly one --disk and a --target DIR")
        if self.verify_boot and (self.in_place or self.path is not None):
            raise UsageError("--verify-boot boots a VM restored into --target DIR")


def points_in_time(snapshot_id: str, sources: dict[str, tuple[str, float]]) -> dict[str, dict[str, Any]]:
    """Per restored disk: the snapshot it came from, that snapshot's time, and whether that is an
    earlier snapshot than the one asked for (a disk a `--vm-disk` backup left out)."""
    return {
        disk: {
            "snapshot_id": source,
            "time": when,
            "time_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
            "earlier": source != snapshot_id,
        }
        for disk, (source, when) in sources.items()
    }


def backup_vm_reporting(repo: Repository, request: VmBackupRequest, emit: Emit) -> dict[str, Any]:
    """Back up one VM, each warning to `emit` as a `warning` event; the summary."""
    result = run_vm_backup(repo, request, on_warning=lambda m: emit("warning", {"message": m}))
    return {
        "message_type": "summary",
        "snapshot_id": result.snapshot_id,
        "vm": request.vm,
        "parent": result.parent,
        "consistency": result.definition.consistency,
        "status": result.definition.status,
        "freeze_window": result.definition.freeze_window,
        "bytes_read": result.bytes_read,
        "duration": round(result.duration, 3),
        "disks": {
            d: {
                "incremental": s.chunks_reused > 0,
                "bytes_read": s.bytes_read,
                "size": s.size,
                "added_bytes": s.new_bytes,
            }
            for d, s in result.images.items()
        },
        "warnings": result.warnings,
    }


def restore_vm_reporting(repo: Repository, order: VmRestoreOrder) -> dict[str, Any]:
    """Run the VM restore `order` asks for; its summary (`mode`: in_place, path or directory)."""
    order.check()
    if order.in_place:
        done = run_vm_restore_in_place(repo, order.snapshot, order.vm, list(order.disks))
        return {
            "mode": "in_place",
            "snapshot_id": done.snapshot_id,
            "vm": order.vm,
            "disks": done.disks,
            "set_aside": done.set_aside,
            "points_in_time": points_in_time(done.snapshot_id, done.sources),
        }
    assert order.target is not None
    if order.path is not None:
        copied = restore_disk_path(repo, order.snapshot, order.vm, order.disks[0], order.path, order.target)
        return {
            "mode": "path",
            "snapshot_id": copied.snapshot_id,
            "vm": order.vm,
            "restored": copied.written,
            "points_in_time": points_in_time(copied.snapshot_id, {order.disks[0]: copied.source}),
        }
    request = VmRestoreRequest(
        snapshot=order.snapshot,
        vm=order.vm,
        target=order.target,
        disks=list(order.disks),
        format=order.format,
        verify_boot=order.verify_boot,
        boot_marker=order.boot_marker,
        boot_timeout=order.boot_timeout,
    )
    result = run_vm_restore(repo, request)
    return {
        "mode": "directory",
        "snapshot_id": result.snapshot_id,
        "vm": order.vm,
        "disks": result.disks,
        "definition": result.definition,
        "start_script": result.start_script,
        "booted_in": result.boot.seconds if result.boot else None,
        "boot_marker": order.boot_marker if result.boot else None,
        "unresolved": result.unresolved,
        "libvirt_definition": result.libvirt_definition,
        "points_in_time": points_in_time(result.snapshot_id, result.sources),
    }
