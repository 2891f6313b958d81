"""CLI commands: `vm list`, `vm backup NAME`, `vm restore SNAP NAME`: VMs through their hypervisor."""

from __future__ import annotations

from typing import Any

import click

from shadowvault.cli import output
from shadowvault.cli.repo_options import repo_options
from shadowvault.cli.vm_runs import backup_vm, disk_text, restore_vm, size_text
from shadowvault.jobs.backup_vm import VmBackupRequest
from shadowvault.jobs.restore_vm import FORMATS
from shadowvault.jobs.vm_reporting import VmRestoreOrder
from shadowvault.repo.tag_lists import given_tags
from shadowvault.shadow.writers.qemu import QemuWriter


@click.group("vm")
def vm() -> None:
    """Virtual machines backed up through their hypervisor (QEMU/QMP), no agent of ours inside."""


@vm.command("list")
@output.json_option
def list_vms(as_json: bool) -> None:
    """QEMU guests: their state, disks (node, format, backing chain) and whether a guest agent answers."""
    rows: list[dict[str, Any]] = []
    for writer in QemuWriter.running():
        try:
            components = writer.identify()
            rows.append(
                {
                    "vm": writer.instance,
                    "status": writer.status,
                    "agent": writer.agent_state,
                    "disks": [c.metadata for c in components],
                }
            )
        except Exception as err:  # one VM whose monitor is busy must not hide the others
            rows.append({"vm": writer.instance, "error": str(err), "disks": []})

    def human() -> None:
        for row in rows:
            stopped = row.get("status") not in (None, "", "running")
            output.listing(f"vm: {row['vm']}" + (f" ({row['status']}, not running)" if stopped else ""))
            if "error" in row:
                output.listing(f"   error: {row['error']}")
                continue
            output.listing(f"   guest agent: {row['agent']}")
            for disk in row["disks"]:
                what = f"node {disk['node']}, {disk['format']}, {size_text(disk['virtual_size'])}"
                output.listing(f"   disk: {disk['disk']} ({what}): {disk_text(disk)}")

    output.emit(as_json, rows, human)


@vm.command("backup")
@repo_options
@click.argument("name")
@click.option(
    "--vm-disk", "disks", multiple=True, metavar="DISK", help="Back up this disk only (repeatable)."
)
@click.option("--full", is_flag=True, help="A full copy even when the last backup's bitmap is there.")
@click.option(
    "--tag", "tags", multiple=True, metavar="TAG[,TAG...]", help="Tag the snapshot (repeatable, as restic)."
)
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
def backup_vm_cmd(
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
        tags=list(given_tags(tags)),
        agent_timeout=agent_timeout,
        on_agent_failure=on_agent_failure,
        copy_speed=copy_speed,
    )
    backup_vm(repo, password_file, request, as_json)


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
@click.option(
    "--boot-timeout",
    type=float,
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="How long --verify-boot waits for --boot-marker before it fails.",
)
@output.json_option
def restore_vm_cmd(
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
    """Restore VM NAME of SNAPSHOT into --target: its disks and definition (NAME.json, NAME.sh).

    "latest" is the newest snapshot of VM NAME. With --disk D --path P, only P from inside disk D."""
    order = VmRestoreOrder(
        snapshot=snapshot,
        vm=name,
        target=target,
        in_place=in_place,
        disks=list(disks),
        format=fmt,
        path=inner_path,
        verify_boot=verify_boot,
        boot_marker=boot_marker,
        boot_timeout=boot_timeout,
    )
    restore_vm(repo, password_file, order, None, as_json)


COMMANDS: list[click.Command] = [vm]
