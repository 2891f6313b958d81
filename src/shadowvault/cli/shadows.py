"""CLI commands: `shadows` (list, delete, expose) and, from shadows_create, `shadows create`."""

import click

from shadowvault.cli.shadows_create import create


@click.group("shadows")
def shadows() -> None:
    """Shadow sets: create, list, delete, expose."""


shadows.add_command(create)

COMMANDS: list[click.Command] = [shadows]
