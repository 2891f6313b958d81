"""`vm backup` and the VM restores, here or in the daemon when one answers; printed the same either way.

The jobs report JSON summaries (jobs/vm_reporting.py); in process this command runs them on the
open repository, through the daemon it starts a run (POST /v1/vm-backups, /v1/vm-restores) and
follows it: the backup's warnings arrive as `warning` events, the summary as the run's result. A
VM backup through the daemon makes its shadow set in the daemon, like `backup`. An S3 repository is
opened here, with the caller's credentials, and so is a restore by a user who is not root
(cli/coordination.py).
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from shadowvault.cli import output
from shadowvault.cli.coordination import finished_run, repository_daemon
from shadowvault.cli.output import info, note, warn
from shadowvault.cli.repo_options import open_repository, read_password, repo_path
from shadowvault.cli.repository import format_time
from shadowvault.cli.restore_daemon import here_or_in_daemon
from shadowvault.client import Client
from shadowvault.jobs.backup_vm import VmBackupRequest
from shadowvault.jobs.vm_reporting import VmRestoreOrder, backup_vm_reporting, restore_vm_reporting
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot_choice import SnapshotFilter
from shadowvault.vm import layout


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def disk_text(disk: dict[str, Any]) -> str:
    """A VM disk as the listings show it: its image and backing chain, and why it is left out if it is."""
    chain = " <- ".join([disk["filename"], *disk.get("backing", [])])
    return chain + (f"; excluded: {disk['excluded']}" if disk.get("excluded") else "")


def _location(repo: str | None) -> str:
    location = repo_path(repo)
    return location if "://" in location else os.path.abspath(location)


def vm_filter(vm: str, snapshot_filter: SnapshotFilter | None = None) -> SnapshotFilter:
    """Snapshots of VM `vm` (and the --host/--tag the user gave): what "latest" means for it."""
    given = snapshot_filter or SnapshotFilter()
    return SnapshotFilter(paths=(layout.snapshot_path(vm),), hosts=given.hosts, tags=given.tags)


def backup_vm(repo: str | None, password_file: str | None, request: VmBackupRequest, as_json: bool) -> None:
    """Back up one VM here or in the daemon; print its warnings and summary."""

    def emit(kind: str, event: dict[str, Any]) -> None:
        if kind == "warning" and not as_json:
            warn(event["message"])

    client = repository_daemon(repo_path(repo))
    if client is None:
        with open_repository(repo, password_file, write=True) as r:
            summary = backup_vm_reporting(r, request, emit)
    else:
        body, password = msgspec.to_builtins(request), read_password(password_file)
        summary = finished_run(
            client,
            lambda: client.start_vm_backup(_location(repo), body, password=password),
            lambda e: emit(e["message_type"], e),
        )
    if as_json:
        output.print_json(summary)
        return
    for disk, s in summary["disks"].items():
        kind = "incremental" if s["incremental"] else "full"
        read, size, added = size_text(s["bytes_read"]), size_text(s["size"]), size_text(s["added_bytes"])
        note(f"disk {disk}: {kind}, read {read} of {size}, added {added}")
    window, status = summary["freeze_window"], summary.get("status", "")
    note(
        f"consistency: {summary['consistency']}"
        + (f"; freeze window {window * 1000:.0f} ms" if window else "")
        + (f"; the VM was not running (QEMU status {status})" if status not in ("", "running") else "")
    )
    info(f"snapshot {summary['snapshot_id'][:8]} saved")


def restore_vm(
    repo: str | None,
    password_file: str | None,
    order: VmRestoreOrder,
    snapshot_filter: SnapshotFilter | None,
    as_json: bool,
) -> None:
    """Restore a VM (or its disks, or a path inside one) here or in the daemon; print what was done."""
    order.check()
    if order.target is not None:
        order.target = os.path.abspath(order.target)  # the daemon's working directory is not ours

    def here(r: Repository, ref: str) -> dict[str, Any]:
        order.snapshot = ref
        return restore_vm_reporting(r, order)

    def there(client: Client, ref: str) -> dict[str, Any]:
        order.snapshot = ref
        body, password = msgspec.to_builtins(order), read_password(password_file)
        return finished_run(client, lambda: client.start_vm_restore(_location(repo), body, password=password))

    summary = here_or_in_daemon(
        repo, password_file, order.snapshot, vm_filter(order.vm, snapshot_filter), here, there
    )
    mode = summary.pop("mode")
    output.emit(as_json, summary, lambda: _print_restore(mode, summary))


def _disk_line(summary: dict[str, Any], disk: str, text: str) -> str:
    """`disk D: TEXT`, with the snapshot and time it came from when a whole VM's disks differ in that."""
    points = summary.get("points_in_time") or {}
    if not any(p["earlier"] for p in points.values()):
        return f"disk {disk}: {text}"
    point = points[disk]
    when = format_time(point["time"])
    older = f", earlier: snapshot {summary['snapshot_id'][:8]} does not hold it" if point["earlier"] else ""
    return f"disk {disk}: {text} (as of snapshot {point['snapshot_id'][:8]}, {when}{older})"


def _earlier_warning(summary: dict[str, Any]) -> None:
    """The warning of a restore that took disks the snapshot asked for left out from earlier ones."""
    points = summary.get("points_in_time") or {}
    earlier = [d for d, p in points.items() if p["earlier"]]
    if not earlier:
        return
    sources = {(points[d]["snapshot_id"], points[d]["time"]) for d in earlier}
    if len(sources) == 1:
        [(source, when)] = sources
        whence = f"earlier snapshot {source[:8]} ({format_time(when)})"
    else:
        whence = "earlier snapshots"
    differ = len({p["snapshot_id"] for p in points.values()}) > 1
    warn(
        f"snapshot {summary['snapshot_id'][:8]} does not hold disk {', '.join(earlier)} of VM "
        f"{summary['vm']}: restored from {whence}"
        + (", so the disks' points in time differ" if differ else "")
    )


def _print_restore(mode: str, summary: dict[str, Any]) -> None:
    _earlier_warning(summary)
    if mode == "path":
        info(f"restored {summary['restored']}")
        return
    if mode == "in_place":
        for disk, path in summary["disks"].items():
            aside = summary["set_aside"].get(disk)
            info(_disk_line(summary, disk, path + (f" (what was there: {aside})" if aside else "")))
        return
    for disk, path in summary["disks"].items():
        info(_disk_line(summary, disk, path))
    info(f"definition: {summary['definition']}; start it with {summary['start_script']}")
    if summary["libvirt_definition"]:
        info(f"libvirt: virsh define {summary['libvirt_definition']}")
    if summary["booted_in"] is not None:
        info(f"verify-boot: {summary['boot_marker']!r} on the console after {summary['booted_in']:.1f} s")
    for left in summary["unresolved"]:
        warn(f"the command line still names {left}: edit {summary['start_script']}")
