"""CLI command: `shadows create` (to be filled in)."""

import click


@click.command("create")
def create() -> None:
    """Create a shadow set."""
    raise click.UsageError("not implemented yet")
