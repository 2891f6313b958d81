"""CLI commands: maintenance (to be filled in)."""

import click

COMMANDS: list[click.Command] = []
