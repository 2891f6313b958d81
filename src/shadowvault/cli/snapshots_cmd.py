"""CLI command: snapshots, the repository's snapshots as a table (or restic's JSON), optionally in
groups (restic's `--group-by`): one table per host, set of paths or tags, each with its own count."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from shadowvault.cli.output import emit, info, json_option, listing, print_table
from shadowvault.cli.repo_options import open_repository, repo_options
from shadowvault.cli.repository import format_size, format_time, snapshot_json
from shadowvault.display import counted, escape_text
from shadowvault.repo.repository import filter_snapshots
from shadowvault.repo.retention_groups import GroupKey, group_snapshots, parse_group_by
from shadowvault.repo.snapshot import Snapshot, summary_bytes
from shadowvault.repo.snapshot_choice import normalize_filter_path
from shadowvault.repo.snapshots import latest_of_each_group

Listed = list[tuple[str, Snapshot]]


def _consistency_cell(snapshot: Snapshot) -> str:
    """Each component with its grade (the components are the grades' keys: no column of their own)."""
    graded = [f"{c}={snapshot.consistency[c]}" for c in sorted(snapshot.consistency)]
    return ", ".join(graded + [c for c in snapshot.components if c not in snapshot.consistency])


def _print_snapshots(found: Listed) -> None:
    rows = [
        (
            sid[:8],
            format_time(s.time),
            escape_text(s.host),
            "\n".join(escape_text(p) for p in s.paths),  # one line per path, whatever its name holds
            ", ".join(escape_text(t) for t in s.tags),
            format_size(summary_bytes(s)),
            _consistency_cell(s),
        )
        for sid, s in found
    ]
    if rows:  # no header above nothing
        print_table(["ID", "Time", "Host", "Paths", "Tags", "Size", "Consistency"], rows)
    info(f"{counted(len(found), 'snapshot')}")


def _print_groups(groups: Sequence[tuple[GroupKey, Listed]]) -> None:
    for number, (key, members) in enumerate(groups):
        if number:
            listing("")
        listing(f"snapshots of {escape_text(key.describe())}:")
        _print_snapshots(members)


@click.command("snapshots")
@repo_options
@click.option("--path", "paths", multiple=True, help="Only snapshots that include this path.")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    help="Only snapshots with this tag (TAG,TAG,...: all of these; repeatable: any of the lists).",
)
@click.option("--host", "hosts", multiple=True, help="Only snapshots of this host (repeatable: any of them).")
@click.option(
    "--latest",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Only the last N snapshots of each host and set of paths (of each group with --group-by).",
)
@click.option(
    "--group-by",
    default="",
    metavar="FIELDS",
    help="List the snapshots in groups sharing: host, paths, tags (comma-separated), a table each.",
)
@click.argument("refs", nargs=-1, metavar="[SNAP]...")
@json_option
def snapshots_cmd(
    repo: str | None,
    password_file: str | None,
    paths: tuple[str, ...],
    tags: tuple[str, ...],
    hosts: tuple[str, ...],
    latest: int | None,
    group_by: str,
    refs: tuple[str, ...],
    as_json: bool,
) -> None:
    """List the snapshots in the repository (or the SNAPs named: ids, prefixes, `latest`), oldest first."""
    grouping = parse_group_by(group_by) if group_by.strip() else None
    with open_repository(repo, password_file) as r:
        listed = r.list_snapshots(skip_damaged=True)
        if refs:
            wanted = {r.find_snapshot(ref)[0] for ref in refs}
            listed = [(sid, snap) for sid, snap in listed if sid in wanted]
        found = filter_snapshots(listed, paths=map(normalize_filter_path, paths), hosts=hosts, tags=tags)
    if grouping is None:
        if latest is not None:
            found = latest_of_each_group(found, latest)
        emit(as_json, [snapshot_json(sid, s) for sid, s in found], lambda: _print_snapshots(found))
        return
    groups = [
        (key, members[-latest:] if latest is not None else members)
        for key, members in group_snapshots(found, grouping)
    ]
    data: list[dict[str, Any]] = [  # restic's snapshots --group-by --json
        {"group_key": key.as_dict(), "snapshots": [snapshot_json(sid, s) for sid, s in members]}
        for key, members in groups
    ]
    emit(as_json, data, lambda: _print_groups(groups))


COMMANDS = [snapshots_cmd]
