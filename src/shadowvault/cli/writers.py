"""CLI commands: `writers list`, like `vssadmin list writers`."""

from __future__ import annotations

import click

from shadowvault.cli import output
from shadowvault.cli.vm_runs import disk_text
from shadowvault.shadow.manifest import Component
from shadowvault.shadow.writers.registry import inventory


@click.group("writers")
def writers() -> None:
    """Writers: the agents that make applications consistent for shadow sets."""


@writers.command("list")
@output.json_option
def list_writers(as_json: bool) -> None:
    """Built-in writers, writers declared in writers.d, and instances found on this machine.

    A writers.d file (or a script it names) that is not owned by root or is writable by group or
    others is listed as `refused`, with the reason.
    """
    entries = inventory()

    def human() -> None:  # one block per writer, like `vssadmin list writers`
        for entry in entries:
            output.listing(f"writer: {entry.writer}")
            output.listing(f"   kind: {entry.kind}")
            output.listing(f"   state: {entry.state}")
            if entry.detail:
                output.listing(f"   {'reason' if entry.state != 'stable' else 'detail'}: {entry.detail}")
            for component in entry.components:
                output.listing(f"   component: {component.name} ({component.kind}): {_where(component)}")
            output.listing("")

    output.emit(as_json, entries, human)


def _where(component: Component) -> str:
    """A component's files; for a VM disk (no files on the host's volumes), its image, its backing
    chain and why the host cannot capture it, as `vm list` shows them."""
    if component.kind == "vm-disk":
        return disk_text(component.metadata)
    return ", ".join(component.paths) or "-"


COMMANDS: list[click.Command] = [writers]
