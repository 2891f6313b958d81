"""CLI command: `exec`: run a program against a shadow set, then release the set."""

from __future__ import annotations

import os

import click

from shadowvault.cli import output
from shadowvault.cli.coordination import shadow_sets
from shadowvault.cli.shadow_options import shadow_set_options
from shadowvault.shadow.execute import exec_in_shadow_set
from shadowvault.shadow.options import SetOptions


@click.command("exec", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
@shadow_set_options
@click.option(
    "--in-place",
    is_flag=True,
    help="Show COMMAND each shadow at its volume's own path (a private mount namespace): other backup "
    "tools then record the paths they always record, find their parent and group their snapshots.",
)
@output.json_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(
    volumes, writers, provider, no_auto_writers, freeze_timeout, commit_timeout, in_place, as_json, command
) -> int:
    """Run COMMAND against a shadow set of the volumes, then release the set.

    \b
    shadowvault exec --volume /srv --writer sqlite:/srv/app.db -- tar -C {shadow} -cf /backup/srv.tar .
    shadowvault exec --volume /srv --in-place -- restic backup /srv

    COMMAND sees, in its environment: SHADOWVAULT_SET_ID, SHADOWVAULT_SHADOW_ROOT (the first
    volume's shadow), SHADOWVAULT_SHADOW_<n> and SHADOWVAULT_VOLUME_<n> for the n-th --volume
    counted from 0; in its arguments {shadow} and {shadow:N} are replaced by those paths.
    With --in-place COMMAND runs in a mount namespace of its own where each shadow is mounted
    read-only over its volume, so it reads the point in time under the usual paths ({shadow} is
    then the volume's path); mounts below a volume are not there.
    COMMAND is yours: it runs as you, with your environment. The set's writers run with a clean
    one (none of your variables, such as SHADOWVAULT_PASSWORD, reach them). Needs root.
    shadowvault exits with COMMAND's status (127 when it is not found). With --json, a summary
    of the set is printed on stdout after COMMAND's own output.
    """
    command = list(command)
    if command and command[0] == "--":
        command = command[1:]
    options = SetOptions(
        writers=writers,
        provider=provider,
        auto_writers=not no_auto_writers,
        freeze_timeout=freeze_timeout,
        commit_timeout=commit_timeout,
    )
    volumes = [os.path.abspath(v) for v in volumes]
    status, manifest = exec_in_shadow_set(command, volumes, options, shadow_sets(), in_place=in_place)
    window = "-" if manifest.freeze_window is None else f"{manifest.freeze_window * 1000:.1f} ms"
    if as_json:
        output.print_json(
            {
                "set_id": manifest.id,
                "status": status,
                "freeze_window": manifest.freeze_window,
                "shadows": manifest.shadows,
                "writers": manifest.writers,
                "notes": manifest.notes,
            }
        )
    else:
        output.note(
            f"shadowvault: shadow set {manifest.id} (freeze window {window}) released; "
            f"command exited with status {status}"
        )
    return status


COMMANDS: list[click.Command] = [exec_cmd]
