"""CLI glue for `restore --directory-restore new-dc|same-dc`: recovering a Samba AD DC.

Both spellings reach the same recovery (shadowvault/directory/samba_dc.py): `--component
system-state` takes the DC's archive from the system-state documents, `--writer samba` from the
backup manifest. Its settings come as `--writer-option samba.KEY=VALUE` (newservername, targetdir)
in both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from shadowvault.cli.writer_restore import parse_writer_options
from shadowvault.components.base import RestoreOptions
from shadowvault.directory.samba_dc import MODES
from shadowvault.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])

WRITER = "samba"


def directory_restore_option(func: F) -> F:
    return click.option(
        "--directory-restore",
        default=None,
        type=click.Choice(MODES),
        help="Recover the Samba AD DC of the snapshot (with --component system-state or --writer samba): "
        "new-dc (the domain on a new DC, --writer-option samba.newservername=NAME) or same-dc (the DC "
        "under its own name); --writer-option samba.targetdir=DIR chooses its empty directory.",
    )(func)


def for_component(options: RestoreOptions, component: str, mode: str | None, specs: tuple[str, ...]) -> None:
    """Carry --directory-restore and the samba.KEY options into a component restore's options."""
    if mode is None:
        if specs:
            raise UsageError("--writer-option goes with --writer NAME, --writers or --directory-restore")
        return
    if component != "system-state":
        raise UsageError("--directory-restore goes with --component system-state (or --writer samba)")
    common, per_writer = parse_writer_options(specs)
    others = sorted(set(per_writer) - {WRITER})
    if common or others:
        raise UsageError("with --component system-state, --writer-option takes samba.KEY=VALUE only")
    options.directory_restore = mode
    options.directory_options = per_writer.get(WRITER, {})


def for_writers(mode: str | None) -> tuple[str, ...]:
    """--directory-restore as the option the samba writer's restore reads."""
    return (f"{WRITER}.directory_restore={mode}",) if mode else ()
