"""CLI command: `volumes list`: the mounted filesystems and the providers that can shadow each."""

from __future__ import annotations

from collections.abc import Sequence

import click

from shadowvault.cli import output
from shadowvault.display import escape_text
from shadowvault.shadow.providers.live import is_pseudo
from shadowvault.shadow.providers.registry import supported_providers, volume_report
from shadowvault.shadow.volumes import list_volumes


def aligned(table: Sequence[Sequence[str]]) -> str:
    """Plain aligned columns, one volume per line, like findmnt: greppable and never truncated."""
    table = [[escape_text(cell) for cell in row] for row in table]  # a cell never breaks its line
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in table)
    return "\n".join(line.rstrip() for line in lines)


@click.group("volumes")
def volumes() -> None:
    """Volumes: the mounted filesystems shadows can be made of."""


@volumes.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include kernel pseudo filesystems (proc, sysfs, ...).")
@click.option("--why", is_flag=True, help="Say, under each volume, why each other provider cannot serve it.")
@output.json_option
def list_cmd(show_all: bool, why: bool, as_json: bool) -> None:
    """Mounted filesystems: mount point, device, type, filesystem UUID and supporting providers
    (--why: and why not the others; --json has both)."""
    shown = [v for v in list_volumes() if show_all or not is_pseudo(v)]
    rows = [volume_report(volume) for volume in shown]

    def human() -> None:
        table = [("MOUNT POINT", "DEVICE", "TYPE", "UUID", "PROVIDERS")] + [
            (v.mount_point, v.device, v.fstype, v.fs_uuid or "-", ",".join(supported_providers(v)) or "-")
            for v in shown
        ]
        lines = aligned(table).split("\n")
        output.listing(lines[0])
        for line, report in zip(lines[1:], rows, strict=True):
            output.listing(line)
            unsupported = report["unsupported"] if why else {}
            assert isinstance(unsupported, dict)
            for provider, reason in sorted(unsupported.items()):
                said = f"provider {provider} cannot shadow {report['mount_point']}: "
                output.listing_line(f"    not {provider}: {reason.removeprefix(said)}")

    output.emit(as_json, rows, human)


COMMANDS: list[click.Command] = [volumes]
