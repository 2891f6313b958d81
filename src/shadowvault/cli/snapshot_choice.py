"""The --path, --host and --tag options of every command that names a snapshot, and their resolver.

One decorator adds the three options and hands the command a `snapshot_filter` (a SnapshotFilter);
`choose` and `choose_all` turn the command line's snapshot references into snapshots. The rules
(what "latest" means with a filter and with a path inside the snapshot) are in repo/snapshot_choice.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.snapshot_choice import LATEST, SnapshotFilter, choose_snapshot, choose_snapshots

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["SnapshotFilter", "choose", "choose_all", "needs_choice", "snapshot_filter_options"]


def snapshot_filter_options(func: F) -> F:
    """Add --path, --host, --tag (restic's filters for "latest" and for snapshot lists); the command
    receives them as one `snapshot_filter` keyword argument."""

    @functools.wraps(func)
    def with_filter(
        *args: Any,
        filter_paths: tuple[str, ...],
        filter_host: tuple[str, ...],
        filter_tags: tuple[str, ...],
        **kw: Any,
    ) -> Any:
        return func(*args, snapshot_filter=SnapshotFilter.of(filter_paths, filter_host, filter_tags), **kw)

    options = [
        click.option(
            "--path",
            "filter_paths",
            multiple=True,
            metavar="PATH",
            help='Only snapshots that include PATH (repeatable: all of them); "latest": the newest of those.',
        ),
        click.option(
            "--host",
            "filter_host",
            multiple=True,
            metavar="HOST",
            help="Only snapshots of HOST (repeatable: any of them).",
        ),
        click.option(
            "--tag",
            "filter_tags",
            multiple=True,
            metavar="TAG",
            help="Only snapshots with TAG (TAG,TAG,...: all of these; repeatable: any of the lists).",
        ),
    ]
    wrapped: Any = with_filter
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped


def choose(
    repo: Repository, ref: str, snapshot_filter: SnapshotFilter | None = None, *, subpath: str = "/"
) -> tuple[str, Snapshot]:
    """The one snapshot `ref` names (an id, a unique prefix or "latest") under the filter."""
    return choose_snapshot(repo, ref, snapshot_filter, subpath=subpath)


def choose_all(
    repo: Repository, refs: Iterable[str], snapshot_filter: SnapshotFilter | None = None
) -> list[tuple[str, Snapshot]]:
    """The snapshots `refs` name, or every snapshot the filter passes when there are none."""
    return choose_snapshots(repo, refs, snapshot_filter)


def needs_choice(ref: str, snapshot_filter: SnapshotFilter, subpath: str = "/") -> bool:
    """Whether `ref` means more than the plain lookup a job does itself (a filter, or "latest" with a
    path inside the snapshot): the command must resolve it to an id first."""
    return bool(snapshot_filter) or (ref.strip() == LATEST and bool(subpath.strip("/")))
