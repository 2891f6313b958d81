"""CLI commands: `vm list`, `vm backup NAME`, `vm restore SNAP NAME`: VMs through their hypervisor."""

from __future__ import annotations

from typing import Any

import click

from shadowvault.cli import output
from shadowvault.cli.output import info, note, warn
from shadowvault.cli.repo_options import open_repository, repo_options
from shadowvault.jobs.backup_vm import VmBackupRequest, run_vm_backup
from shadowvault.jobs.restore_vm import FORMATS, VmRestoreRequest, run_vm_restore, run_vm_restore_in_place
from shadowvault.jobs.restore_vm_files import restore_disk_path
from shadowvault.shadow.writers.qemu import QemuWriter


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@click.group("vm")
def vm() -> None:
    """Virtual machines backed up through their hypervisor (QEMU/QMP), no agent of ours inside."""


@vm.command("list")
@output.json_option
def list_vms(as_json: bool) -> None:
    """Running QEMU guests: their disks (node, format, backing chain) and whether a guest agent answers."""
    rows: list[dict[str, Any]] = []
    for writer in QemuWriter.running():
        try:
            components = writer.identify()
            rows.append(
                {
                    "vm": writer.instance,
                    "agent": writer.agent_state,
                    "disks": [c.metadata for c in components],
                }
            )
        except Exception as err:  # one VM whose monitor is busy must not hide the others
            rows.append({"vm": writer.instance, "error": str(err), "disks": []})

    def human() -> None:
        for row in rows:
            output.listing(f"vm: {row['vm']}")
            if "error" in row:
                output.listing(f"   error: {row['error']}")
                continue
            output.listing(f"   guest agent: {row['agent']}")
            for disk in row["disks"]:
                chain = " <- ".join([disk["filename"], *disk["backing"]])
                what = f"node {disk['node']}, {disk['format']}, {_size(disk['virtual_size'])}"
                line = f"   disk: {disk['disk']} ({what}): {chain}"
                output.listing(line + (f"; excluded: {disk['excluded']}" if disk.get("excluded") else ""))

    output.emit(as_json, rows, human)


@vm.command("backup")
@repo_options
@click.argument("name")
@click.option(
    "--vm-disk", "disks", multiple=True, metavar="DISK", help="Back up this disk only (repeatable)."
)
@click.option("--full", is_flag=True, help="A full copy even when the last backup's bitmap is there.")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Tag the snapshot (repeatable).")
@click.option(
    "--agent-timeout", type=float, default=10.0, show_default=True, help="Seconds the guest agent has."
)
@click.option(
    "--on-agent-failure",
    type=click.Choice(["degrade", "abort"]),
    default="degrade",
    show_default=True,
    help="A guest agent that does not answer: go on crash-consistent, or abort.",
)
@click.option(
    "--copy-speed", type=int, default=0, metavar="BYTES", help="Limit QEMU's copy to BYTES per second."
)
@output.json_option
def backup_vm(
    repo: str | None,
    password_file: str | None,
    name: str,
    disks: tuple[str, ...],
    full: bool,
    tags: tuple[str, ...],
    agent_timeout: float,
    on_agent_failure: str,
    copy_speed: int,
    as_json: bool,
) -> None:
    """Back up the running VM NAME (application-consistent when its guest agent answers)."""
    request = VmBackupRequest(
        vm=name,
        disks=list(disks),
        full=full,
        tags=list(tags),
        agent_timeout=agent_timeout,
        on_agent_failure=on_agent_failure,
        copy_speed=copy_speed,
    )
    with open_repository(repo, password_file, write=True) as r:
        result = run_vm_backup(r, request, on_warning=lambda m: None if as_json else warn(m))
    summary = {
        "message_type": "summary",
        "snapshot_id": result.snapshot_id,
        "vm": name,
        "parent": result.parent,
        "consistency": result.definition.consistency,
        "freeze_window": result.definition.freeze_window,
        "bytes_read": result.bytes_read,
        "duration": round(result.duration, 3),
        "disks": {
            d: {"incremental": s.chunks_reused > 0, "bytes_read": s.bytes_read, "size": s.size}
            for d, s in result.images.items()
        },
        "warnings": result.warnings,
    }
    if as_json:
        output.print_json(summary)
        return
    for disk, s in result.images.items():
        kind = "incremental" if s.chunks_reused else "full"
        note(
            f"disk {disk}: {kind}, read {_size(s.bytes_read)} of {_size(s.size)}, added {_size(s.new_bytes)}"
        )
    window = result.definition.freeze_window
    note(
        f"consistency: {result.definition.consistency}"
        + (f"; freeze window {window * 1000:.0f} ms" if window else "")
    )
    info(f"snapshot {result.snapshot_id[:8]} saved")


@vm.command("restore")
@repo_options
@click.argument("snapshot")
@click.argument("name")
@click.option("--target", type=click.Path(file_okay=False), help="Directory to restore into.")
@click.option(
    "--in-place", is_flag=True, help="Over the stopped VM's own images (what is there is set aside)."
)
@click.option("--disk", "disks", multiple=True, metavar="DISK", help="Restore this disk only (repeatable).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="qcow2", show_default=True)
@click.option(
    "--path", "inner_path", default=None, metavar="PATH", help="A file or directory from inside --disk."
)
@click.option("--verify-boot", is_flag=True, help="Boot the restored VM headless (TCG) until --boot-marker.")
@click.option(
    "--boot-marker", default="login:", show_default=True, help="Text its serial console shows when up."
)
@click.option("--boot-timeout", type=float, default=300.0, show_default=True)
@output.json_option
def restore_vm(
    repo: str | None,
    password_file: str | None,
    snapshot: str,
    name: str,
    target: str | None,
    in_place: bool,
    disks: tuple[str, ...],
    fmt: str,
    inner_path: str | None,
    verify_boot: bool,
    boot_marker: str,
    boot_timeout: float,
    as_json: bool,
) -> None:
    """Restore VM NAME of SNAPSHOT into --target: its disks and definition (NAME.json, NAME.sh)."""
    if in_place == (target is not None):
        raise click.UsageError("give --target DIR or --in-place (over the stopped VM's images)")
    with open_repository(repo, password_file) as r:
        if in_place:
            done = run_vm_restore_in_place(r, snapshot, name, list(disks))
            moved: dict[str, Any] = {
                "snapshot_id": done.snapshot_id,
                "vm": name,
                "disks": done.disks,
                "set_aside": done.set_aside,
            }

            def restored_in_place() -> None:
                for disk, path in done.disks.items():
                    aside = done.set_aside.get(disk)
                    info(f"disk {disk}: {path}" + (f" (what was there: {aside})" if aside else ""))

            output.emit(as_json, moved, restored_in_place)
            return
        assert target is not None
        if inner_path is not None:
            if len(disks) != 1:
                raise click.UsageError("--path needs exactly one --disk")
            written = restore_disk_path(r, snapshot, name, disks[0], inner_path, target)
            output.emit(as_json, {"restored": written}, lambda: info(f"restored {written}"))
            return
        request = VmRestoreRequest(
            snapshot=snapshot,
            vm=name,
            target=target,
            disks=list(disks),
            format=fmt,
            verify_boot=verify_boot,
            boot_marker=boot_marker,
            boot_timeout=boot_timeout,
        )
        result = run_vm_restore(r, request)
    data: dict[str, Any] = {
        "snapshot_id": result.snapshot_id,
        "vm": name,
        "disks": result.disks,
        "definition": result.definition,
        "start_script": result.start_script,
        "booted_in": result.boot.seconds if result.boot else None,
    }

    def human() -> None:
        for disk, path in result.disks.items():
            info(f"disk {disk}: {path}")
        info(f"definition: {result.definition}; start it with {result.start_script}")
        if result.boot is not None:
            info(f"verify-boot: {boot_marker!r} on the console after {result.boot.seconds:.1f} s")
        for left in result.unresolved:
            warn(f"the command line still names {left}: edit {result.start_script}")

    output.emit(as_json, data, human)


COMMANDS: list[click.Command] = [vm]
