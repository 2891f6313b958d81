"""The forget options restic users reach for beyond the --keep-* counts: --keep-within (and its
-hourly ... -yearly forms) and --group-by. Parsing only: the rules are repo/forget.py,
repo/durations.py and repo/retention_groups.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from shadowvault.repo.durations import Duration, parse_duration
from shadowvault.repo.forget import WITHIN_RULES

F = TypeVar("F", bound=Callable[..., Any])

_UNITS = {"hourly": "hour", "daily": "day", "weekly": "week", "monthly": "month", "yearly": "year"}


def forget_within_options(func: F) -> F:
    """Add --keep-within, --keep-within-RULE and --group-by."""
    options = [
        click.option(
            "--keep-within",
            metavar="DURATION",
            default=None,
            help="Keep the snapshots younger than DURATION (2y5m7d3h) counted back from the newest.",
        ),
        *(
            click.option(
                f"--keep-within-{rule}",
                f"within_{rule}",
                metavar="DURATION",
                default=None,
                help=f"Keep the newest snapshot of each {_UNITS[rule]} within DURATION of the newest.",
            )
            for rule in WITHIN_RULES
        ),
        click.option(
            "--group-by",
            default="host,paths",
            show_default=True,
            metavar="FIELDS",
            help="Apply the policy per group of snapshots sharing: host, paths, tags ('' for one group).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def within_durations(keep_within: str | None, **rules: str | None) -> dict[str, Duration | None]:
    """KeepPolicy's within fields from the option values (UsageError naming the option when bad)."""
    parsed: dict[str, Duration | None] = {
        "within": parse_duration(keep_within) if keep_within is not None else None
    }
    for name, value in rules.items():
        option = "--keep-" + name.replace("_", "-")
        parsed[name] = parse_duration(value, option) if value is not None else None
    return parsed
