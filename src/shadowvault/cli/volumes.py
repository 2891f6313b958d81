"""CLI commands: volumes (to be filled in)."""

import click

COMMANDS: list[click.Command] = []
