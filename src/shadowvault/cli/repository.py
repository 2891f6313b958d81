"""CLI commands: repository (to be filled in)."""

import click

COMMANDS: list[click.Command] = []
