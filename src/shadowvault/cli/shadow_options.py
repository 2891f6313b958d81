"""Options shared by the commands that create shadow sets (`shadows create`, `exec`, `backup`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from shadowvault.cli import output
from shadowvault.shadow.manifest import ShadowSetManifest
from shadowvault.shadow.providers.registry import provider_names


def shadow_set_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--volume, --writer, --provider, --no-auto-writers, --freeze-timeout, --commit-timeout."""
    options = [
        click.option(
            "--volume",
            "volumes",
            multiple=True,
            required=True,
            metavar="MOUNT_POINT",
            help="A mounted filesystem to shadow (repeat for a set of several volumes).",
        ),
        click.option(
            "--writer",
            "writers",
            multiple=True,
            metavar="NAME[:INSTANCE]",
            help="A writer to include: sqlite:/path/app.db, script:NAME, fsfreeze[:MNT] (only with "
            "--provider live: btrfs and reflink refuse it, a snapshot of a frozen filesystem deadlocks), ...",
        ),
        click.option(
            "--provider",
            default="auto",
            show_default=True,
            metavar="auto|" + "|".join(provider_names()),
            help="How the shadows are made; auto picks the best one for each volume.",
        ),
        click.option(
            "--no-auto-writers",
            "no_auto_writers",
            is_flag=True,
            help="Only the writers named with --writer (no discovery, no writers.d).",
        ),
        click.option(
            "--freeze-timeout",
            type=click.FloatRange(min=0.001),
            default=60.0,
            show_default=True,
            metavar="SECONDS",
            help="Writers must all freeze within this time, or the set aborts.",
        ),
        click.option(
            "--commit-timeout",
            type=click.FloatRange(min=0.001),
            default=10.0,
            show_default=True,
            metavar="SECONDS",
            help="Providers must commit within this time, or the set aborts.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def print_manifest(manifest: ShadowSetManifest) -> None:
    """A shadow set for a person: id, shadows, writers and their components, freeze window, notes.

    Plain lines rather than a table: shadow paths are long and must stay copyable.
    """
    persistent = ", persistent" if manifest.persistent else ""
    output.listing_line(f"shadow set {manifest.id} ({manifest.state}{persistent})")
    output.listing_line(f"freeze window: {_ms(manifest.freeze_window)}")
    for shadow in manifest.shadows:
        atomic = "atomic" if shadow.atomic else "not atomic"
        output.listing_line(f"shadow of {shadow.volume} ({shadow.provider}, {atomic}): {shadow.path}")
    for report in manifest.writers:
        label = f"{report.name}:{report.instance}" if report.instance else report.name
        failure = f" ({report.failure})" if report.failure else ""
        output.listing_line(f"writer {label}: {report.state}{failure}")
        for component in report.components:
            reason = f" ({component.reason})" if component.reason else ""
            output.listing_line(f"  {component.name}: {component.consistency}{reason}")
    for note in manifest.notes:
        output.listing_line(f"note: {note}")
