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

    def human() -> None:
        rows = []
        for entry in entries:
            components = ", ".join(
                f"{c.name} ({', '.join(p for p in c.paths[:2])})" if c.paths else c.name
                for c in entry.components
            )
            rows.append((entry.writer, entry.kind, entry.state, components or "-", entry.detail))
        output.print_table(["writer", "kind", "state", "components", "detail"], rows)

    output.emit(as_json, entries, human)


COMMANDS: list[click.Command] = [writers]
