"""CLI commands: restore (to be filled in)."""

import click

COMMANDS: list[click.Command] = []
