"""-v, -q, --no-daemon and --json before or after the command, as restic takes its global flags.

The root group declares -v/--verbose, -q/--quiet, --no-daemon and --json; every command gets hidden
copies of the first three (`attach`), so `shadowvault backup -q` is `shadowvault -q backup`. What
any of them asks is kept in the context's meta (shared by the root and every subcommand), where the
commands read it: QUIET (output.quiet), NO_DAEMON (cli/coordination.py), the verbosity (the log
level). A command's own --json (output.json_option) is also set by the root's, and a command that
prints no JSON refuses either in one line rather than ignoring it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import click

from shadowvault.cli import output

NO_DAEMON = "shadowvault.no_daemon"  # meta: --no-daemon (or SHADOWVAULT_NO_DAEMON) was given
VERBOSITY = "shadowvault.verbosity"  # meta: how many -v were given, before and after the command
_ATTACHED = "_shadowvault_globals"  # marks a command whose hidden copies are in place


def log_level(verbosity: int) -> int:
    """WARNING, INFO with -v, DEBUG with -vv (or SHADOWVAULT_DEBUG)."""
    if os.environ.get("SHADOWVAULT_DEBUG"):
        return logging.DEBUG
    return logging.WARNING - 10 * min(verbosity, 2)


def _more_verbose(ctx: click.Context, _param: click.Parameter, count: int) -> None:
    if count:
        ctx.meta[VERBOSITY] = ctx.meta.get(VERBOSITY, 0) + count
        logging.getLogger().setLevel(log_level(ctx.meta[VERBOSITY]))


def _keep(key: str) -> Callable[[click.Context, click.Parameter, bool], None]:
    """A flag's callback that records it in the meta under `key` when given."""

    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.meta[key] = True

    return callback


def _no_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value or ctx.meta.get(output.JSON_GLOBAL):
        names = []
        while ctx.parent is not None:
            names.append(ctx.info_name or "")
            ctx = ctx.parent
        raise click.UsageError(f"{' '.join(reversed(names))} prints no JSON: --json does not apply")


def _copies(with_json_refusal: bool) -> list[click.Parameter]:
    copies: list[click.Parameter] = [
        click.Option(
            ["-v", "--verbose"], count=True, hidden=True, expose_value=False, callback=_more_verbose
        ),
        click.Option(
            ["-q", "--quiet"], is_flag=True, hidden=True, expose_value=False, callback=_keep(output.QUIET)
        ),
        click.Option(
            ["--no-daemon"], is_flag=True, hidden=True, expose_value=False, callback=_keep(NO_DAEMON)
        ),
    ]
    if with_json_refusal:
        copies.append(
            click.Option(["--json"], is_flag=True, hidden=True, expose_value=False, callback=_no_json)
        )
    return copies


def attach(command: click.Command) -> click.Command:
    """Give `command` (and, for a group, every command below it) the hidden global flags; once."""
    if getattr(command, _ATTACHED, False):
        return command
    setattr(command, _ATTACHED, True)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            attach(sub)
        command.params.extend(_copies(with_json_refusal=False))
        return command
    has_json = any(p.name == "as_json" for p in command.params)
    command.params.extend(_copies(with_json_refusal=not has_json))
    return command
