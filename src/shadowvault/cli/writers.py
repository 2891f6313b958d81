"""CLI commands: writers (to be filled in)."""

import click

COMMANDS: list[click.Command] = []
