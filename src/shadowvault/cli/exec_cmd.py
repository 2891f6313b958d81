"""CLI commands: exec_cmd (to be filled in)."""

import click

COMMANDS: list[click.Command] = []
