"""CLI commands: shadows (to be filled in)."""

import click

COMMANDS: list[click.Command] = []
