"""CLI commands: `writers list`, like `vssadmin list writers`."""

from __future__ import annotations

import click

from shadowvault.cli import output
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
                paths = ", ".join(component.paths) or "-"
                output.listing(f"   component: {component.name} ({component.kind}): {paths}")
            output.listing("")

    output.emit(as_json, entries, human)


COMMANDS: list[click.Command] = [writers]
