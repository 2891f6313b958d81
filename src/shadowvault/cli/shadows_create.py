"""CLI command: `shadows create`."""

from __future__ import annotations

import os

import click

from shadowvault.cli import output
from shadowvault.cli.coordination import shadow_sets
from shadowvault.cli.shadow_options import print_manifest, shadow_set_options
from shadowvault.shadow.options import SetOptions


@click.command("create")
@shadow_set_options
@click.option(
    "--persistent/--auto-release",
    default=True,
    show_default=True,
    help="Keep the set until `shadows delete` (default), or release it as soon as it is made "
    "(--auto-release: only useful to test writers and providers; use `exec` to read a set "
    "that lives as long as a command).",
)
@output.json_option
def create(
    volumes, writers, provider, no_auto_writers, freeze_timeout, commit_timeout, persistent, as_json
) -> None:
    """Create a shadow set of one or more volumes and keep it.

    The writers of the data on the volumes (and any named with --writer) are frozen together, the
    providers make the shadows, the writers thaw. Prints the set id, where each shadow can be
    read, every writer's state and the freeze window. Sets made here are persistent: they stay
    until `shadowvault shadows delete ID`. With --auto-release the set is released before the
    command ends (a dry run of the whole sequence).
    """
    options = SetOptions(
        writers=writers,
        provider=provider,
        persistent=True,
        auto_writers=not no_auto_writers,
        freeze_timeout=freeze_timeout,
        commit_timeout=commit_timeout,
        backup_type="copy",
    )
    sets = shadow_sets()
    manifest = sets.create([os.path.abspath(v) for v in volumes], options)
    if not persistent:
        sets.delete(manifest.id)
        manifest.state = "released"
        manifest.persistent = False  # released already: not "released, persistent" as it was created
    output.emit(as_json, manifest, lambda: print_manifest(manifest))
    if not persistent and not as_json:
        output.note("note: --auto-release: the set was released; nothing is kept")
