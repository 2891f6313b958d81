"""CLI commands: backup (to be filled in)."""

import click

COMMANDS: list[click.Command] = []
