"""CLI commands: ls (a snapshot's entries) and diff (what changed between two snapshots)."""

from __future__ import annotations

import sys

import click

from shadowvault.archive.diff import SYMBOLS, Change, diff_trees, directories_above
from shadowvault.archive.diff_stats import DiffStats
from shadowvault.archive.listing import describe, display, list_snapshot, long_line, path_fields
from shadowvault.cli.output import info, json_option, print_json, warn
from shadowvault.cli.repo_options import open_repository, repo_options
from shadowvault.cli.snapshot_choice import SnapshotFilter, choose, snapshot_filter_options
from shadowvault.display import escape_text, human_size
from shadowvault.repo.tree import entry_error, invalid_name


def _line(text: str) -> None:
    """One result line on stdout (plain: listings can have millions of lines)."""
    sys.stdout.write(text + "\n")


def _not_read(error: str) -> str:
    """How an entry that could not be read at backup is marked (its error comes from the repository)."""
    return escape_text(entry_error(error))


def _unsafe(why: str) -> str:
    """How an entry of a crafted tree is marked: its name is not one path component."""
    return f"unsafe name, a restore skips it: {why}"


@click.command("ls")
@repo_options
@click.argument("snapshot", metavar="SNAP")
@click.argument("path", required=False, default="/")
@click.option("-l", "--long", "long_format", is_flag=True, help="Show mode, owner, size and time.")
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="List below PATH.")
@snapshot_filter_options
@json_option
def ls_cmd(
    repo: str | None,
    password_file: str | None,
    snapshot: str,
    path: str,
    long_format: bool,
    recursive: bool,
    snapshot_filter: SnapshotFilter,
    as_json: bool,
) -> None:
    """List the files of a snapshot (below PATH); "latest" is the newest snapshot (that the filters
    pass) holding PATH."""
    with open_repository(repo, password_file) as r:
        snap_id, snap = choose(r, snapshot, snapshot_filter, subpath=path)
        if as_json:
            print_json(  # struct_type: restic's name for the kind of line, for restic users' scripts
                {
                    "message_type": "snapshot",
                    "struct_type": "snapshot",
                    "id": snap_id,
                    "paths": snap.paths,
                    "time": snap.time,
                }
            )
        for entry_path, node in list_snapshot(r, snap.tree, path, recursive=recursive):
            if as_json:
                print_json({"message_type": "node", "struct_type": "node", **describe(entry_path, node)})
            elif long_format:
                suffix = ""
                if node.error is not None:
                    suffix += f"  ({_not_read(node.error)})"
                if (why := invalid_name(node.name)) is not None:
                    suffix += f"  ({_unsafe(why)})"
                _line(long_line(entry_path, node) + suffix)
            else:
                _line(display(entry_path))
                if node.error is not None:  # names alone on stdout (scripts read them); the mark beside
                    warn(f"{display(entry_path)}: {_not_read(node.error)}")
                if (why := invalid_name(node.name)) is not None:
                    warn(f"{display(entry_path)}: {_unsafe(why)}")


@click.command("diff")
@repo_options
@click.argument("first", metavar="SNAP1")
@click.argument("second", metavar="SNAP2")
@click.option(  # restic hides metadata changes without it; here they are always shown (U)
    "--metadata",
    is_flag=True,
    expose_value=False,
    help="Accepted for restic: metadata changes are always shown.",
)
@snapshot_filter_options
@json_option
def diff_cmd(
    repo: str | None,
    password_file: str | None,
    first: str,
    second: str,
    snapshot_filter: SnapshotFilter,
    as_json: bool,
) -> None:
    """Show what changed from SNAP1 to SNAP2: + added, - removed, M modified, U metadata only,
    ! not readable at the second backup (what was in an unreadable directory is not compared)."""
    stats = DiffStats()
    with open_repository(repo, password_file) as r:
        id1, snap1 = choose(r, first, snapshot_filter)
        id2, snap2 = choose(r, second, snapshot_filter)
        if not as_json:  # on stdout with the changes, as restic: `diff A B > file` keeps all three
            info(f"comparing snapshot {id1[:8]} to {id2[:8]}:")
        above = directories_above([*snap1.paths, *snap2.paths])
        for difference in diff_trees(r, snap1.tree, snap2.tree, above=above):
            stats.add(difference)
            if as_json:
                print_json(
                    {
                        "message_type": "change",
                        **path_fields(difference.path),
                        "change": difference.change.value,
                        "modifier": SYMBOLS[difference.change],  # restic's field: + - M U (and our !)
                        "type": difference.type,
                        **({"error": difference.error} if difference.error is not None else {}),
                    }
                )
            else:
                mark = f"  ({_not_read(difference.error)})" if difference.error is not None else ""
                _line(f"{SYMBOLS[difference.change]}    {display(difference.path)}{mark}")
        if as_json:
            figures = stats.as_json(r.blob_size)
            restic_ids = {"source_snapshot": id1, "target_snapshot": id2}  # restic's names
            print_json({"message_type": "statistics", "source": id1, "target": id2, **restic_ids, **figures})
        else:
            _print_diff_figures(stats, stats.data(r.blob_size))


def _print_diff_figures(stats: DiffStats, data: dict[str, int]) -> None:
    """restic's figures under the changes: by kind, then the data."""
    changes = stats.changes
    info("")
    info(f"files:    {stats.added.files} new, {stats.removed.files} removed, {stats.changed_files} changed")
    info(f"dirs:     {stats.added.dirs} new, {stats.removed.dirs} removed")
    info(f"others:   {stats.added.others} new, {stats.removed.others} removed")
    info(f"metadata: {changes[Change.METADATA]} changed; unreadable: {changes[Change.UNREADABLE]}")
    info(f"data:     {human_size(data['added_bytes'])} added, {human_size(data['removed_bytes'])} removed")


COMMANDS: list[click.Command] = [ls_cmd, diff_cmd]
