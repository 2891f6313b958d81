"""`shadowvault recover`: a machine rebuilt from a snapshot on an empty disk (docs/recover.md)."""

from __future__ import annotations

import click

from shadowvault.cli.output import info, json_flag, listing, print_json, warn
from shadowvault.cli.repo_options import open_repository, repo_options
from shadowvault.components.plan import Plan
from shadowvault.display import counted
from shadowvault.errors import PartialFailure
from shadowvault.recover.run import RecoverRequest, run_recover


def _show_plan(plan: Plan, as_json: bool) -> None:
    if as_json:
        print_json({"message_type": "plan", **plan.to_dict()})
        return
    for line in plan.lines():
        listing(line)
    for message in plan.warnings:
        warn(message)


@click.command("recover")
@repo_options
@click.argument("snapshot", metavar="SNAP")
@click.option(
    "--disk", required=True, metavar="IMAGE_OR_DEVICE", help="The empty disk (or image) to rebuild."
)
@click.option(
    "--layout",
    "layout_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="A disk layout "
    "document (disk-layout.json, perhaps edited) instead of the one recorded in the snapshot.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@click.option("--new-machine-id", is_flag=True, help="Empty /etc/machine-id (a clone, not the same machine).")
@json_flag("Print the plan and the report as JSON.")
def recover_cmd(
    repo: str | None,
    password_file: str | None,
    snapshot: str,
    disk: str,
    layout_file: str | None,
    dry_run: bool,
    new_machine_id: bool,
    as_json: bool,
) -> None:
    """Partition DISK as the source machine was, make its filesystems with their UUIDs, restore the
    snapshot's files and system-state components onto them, and install its bootloader."""
    request = RecoverRequest(snapshot, disk, layout_file, dry_run=dry_run, new_machine_id=new_machine_id)
    with open_repository(repo, password_file) as r:
        report = run_recover(r, request, on_plan=lambda plan: _show_plan(plan, as_json))
    if not report.applied:
        return
    if as_json:
        print_json(
            {
                "message_type": "summary",
                "disk": disk,
                "fstab": report.fstab_notes,
                "timings": report.timings,
                "warnings": report.warnings,
                "errors": [{"what": w, "why": y} for w, y in report.errors],
            }
        )
    else:
        for note in report.fstab_notes:
            info(f"fstab: {note}")
        phases = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in report.timings.items())
        info(f"recovered {disk}: {phases}")
        for message in report.warnings:
            warn(message)
        for what, why in report.errors:
            warn(f"{what}: {why}")
    if report.errors:
        raise PartialFailure(f"{counted(len(report.errors), 'item')} could not be restored; the others were")


COMMANDS = [recover_cmd]
