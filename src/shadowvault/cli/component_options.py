"""The component options of `backup` (--component, --source-root, --users), apart from the restore
glue in cli/components.py, so that `backup` starts without importing the restore machinery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from shadowvault.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])

COMPONENT_NAMES = ("files", "user-profiles", "system-state")


def split_users(users: str | None) -> list[str] | None:
    if not users:
        return None
    names = [u.strip() for u in users.split(",") if u.strip()]
    if not names:
        raise UsageError("--users wants a comma-separated list of account names")
    return names


def backup_component_options(func: F) -> F:
    """--component, --source-root, --users for `backup`."""
    func = click.option(
        "--users",
        default=None,
        metavar="A,B",
        help="user-profiles: these accounts (default: every human account).",
    )(func)
    func = click.option(
        "--source-root",
        default="/",
        show_default=True,
        type=click.Path(),
        help="Collect components from this tree (another machine's root).",
    )(func)
    func = click.option(
        "--component",
        "components",
        multiple=True,
        type=click.Choice(COMPONENT_NAMES),
        help="Back up this component (repeatable); PATHS go to the files component.",
    )(func)
    return func
