"""CLI commands for looking into a repository: find, dump, cat, stats, tag (parse, call the library, print).

The work is in archive/find.py, archive/dump.py, archive/stats.py, repo/raw_objects.py and
repo/retag.py; snapshots are named as everywhere (cli/snapshot_choice.py). User docs:
docs/commands-inspect.md.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import BinaryIO

import click

from shadowvault.archive.dump import ARCHIVE_FORMATS, WRITERS, find_entry, write_file
from shadowvault.archive.find import Patterns, find_entries
from shadowvault.archive.listing import describe, display, long_line
from shadowvault.archive.stats import MODES, snapshot_stats
from shadowvault.archive.time_option import parse_find_time
from shadowvault.cli.find_objects import check_ids, find_objects, id_mode, match_line, summary_line
from shadowvault.cli.output import info, json_option, listing, print_json, warn
from shadowvault.cli.repo_options import open_repository, repo_options
from shadowvault.cli.repository import format_size
from shadowvault.cli.snapshot_choice import SnapshotFilter, choose, choose_all, snapshot_filter_options
from shadowvault.display import counted
from shadowvault.errors import PartialFailure, UsageError
from shadowvault.repo.raw_objects import KINDS, cat_blob, cat_document, snapshot_document
from shadowvault.repo.retag import TagChange, retag
from shadowvault.repo.tag_lists import split_tags


def _line(text: str) -> None:
    """One result line on stdout (plain: results can run to millions of lines)."""
    sys.stdout.write(text + "\n")


def _binary_stdout() -> BinaryIO:
    return sys.stdout.buffer


# ------------------------------------------------------------------ find


@click.command("find")
@repo_options
@click.argument("patterns", nargs=-1, required=True, metavar="PATTERN...|ID...")
@click.option(
    "--snapshot",
    "-s",
    "refs",
    multiple=True,
    metavar="SNAP",
    help="Search only this snapshot (repeatable; default: every snapshot the filters pass).",
)
@click.option("-i", "--ignore-case", is_flag=True, help="Match names without regard to case.")
@click.option("-l", "--long", "long_format", is_flag=True, help="Show mode, owner, size and time, as ls -l.")
@click.option("-O", "--oldest", metavar="TIME", help="Only entries modified at or after TIME (local).")
@click.option("-N", "--newest", metavar="TIME", help="Only entries modified at or before TIME (local).")
@click.option(
    "--blob", "by_blob", is_flag=True, help="The arguments are data blob ids: find the files holding them."
)
@click.option("--tree", "by_tree", is_flag=True, help="The arguments are tree ids: find those directories.")
@click.option(
    "--pack", "by_pack", is_flag=True, help="The arguments are pack ids: find what uses each blob in them."
)
@click.option("--show-pack-id", is_flag=True, help="With --blob, --tree or --pack: the pack of each blob.")
@snapshot_filter_options
@json_option
def find_cmd(
    repo: str | None,
    password_file: str | None,
    patterns: tuple[str, ...],
    refs: tuple[str, ...],
    ignore_case: bool,
    long_format: bool,
    oldest: str | None,
    newest: str | None,
    by_blob: bool,
    by_tree: bool,
    by_pack: bool,
    show_pack_id: bool,
    snapshot_filter: SnapshotFilter,
    as_json: bool,
) -> None:
    """Find files and directories by name across snapshots.

    A PATTERN without '/' is matched against names (`*.conf`); one with '/' against the full path as
    backed up (`/home/*/.bashrc`, `**/.git/config`). Each match prints its snapshot, modification
    time, size and path; --json prints one `match` line per entry and a `summary` line. With --blob,
    --tree or --pack the arguments are object ids (hex, or a unique prefix) instead of patterns.
    """
    options = {
        "--ignore-case": ignore_case,
        "--long": long_format,
        "--oldest": bool(oldest),
        "--newest": bool(newest),
    }
    mode = id_mode(by_blob, by_tree, by_pack, show_pack_id, options)
    if mode is not None:
        check_ids(mode, patterns)
        with open_repository(repo, password_file) as r:
            snapshots = choose_all(r, refs, snapshot_filter)
            find_objects(r, snapshots, mode, patterns, show_pack_id=show_pack_id, as_json=as_json)
        return
    compiled = Patterns(patterns, ignore_case=ignore_case)
    modified = _modified_between(oldest, newest)
    with open_repository(repo, password_file) as r:
        snapshots = choose_all(r, refs, snapshot_filter)
        count = 0
        for found in find_entries(r, snapshots, compiled):
            node = found.node
            if not modified(node.mtime_ns):
                continue
            count += 1
            if as_json:
                print_json(
                    {"message_type": "match", "snapshot_id": found.snapshot_id, **describe(found.path, node)}
                )
            elif long_format:
                _line(f"{found.snapshot_id[:8]}  {long_line(found.path, node)}")
            else:
                _line(match_line(found.snapshot_id, found.path, node, node.mtime_ns / 1e9))
    if as_json:
        print_json({"message_type": "summary", "matches": count, "snapshots": len(snapshots)})
    else:
        sys.stderr.write(summary_line(count, len(snapshots)) + "\n")


def _modified_between(oldest: str | None, newest: str | None) -> Callable[[int], bool]:
    """Whether an mtime (ns) is within --oldest and --newest (restic find's options, times included)."""
    low = parse_find_time(oldest, "--oldest") * 1e9 if oldest else -math.inf
    high = parse_find_time(newest, "--newest") * 1e9 if newest else math.inf
    if low > high:
        raise UsageError(f"--oldest {oldest!r} is after --newest {newest!r}: nothing could match")
    return lambda mtime_ns: low <= mtime_ns <= high


# ------------------------------------------------------------------ dump


@click.command("dump")
@repo_options
@click.argument("snapshot", metavar="SNAP")
@click.argument("path")
@click.option(
    "--archive",
    "archive_format",
    type=click.Choice(ARCHIVE_FORMATS),
    default="tar",
    show_default=True,
    help="The stream a directory is written as.",
)
@snapshot_filter_options
def dump_cmd(
    repo: str | None,
    password_file: str | None,
    snapshot: str,
    path: str,
    archive_format: str,
    snapshot_filter: SnapshotFilter,
) -> None:
    """Write PATH of a snapshot to stdout: a file as its bytes, anything else (a directory, `/` for
    the whole snapshot) as a tar (or zip) stream, members named by their full paths without the
    leading '/'. "latest" is the newest snapshot (that the filters pass) holding PATH."""
    out = _binary_stdout()
    with open_repository(repo, password_file) as r:
        _, snap = choose(r, snapshot, snapshot_filter, subpath=path)
        raw_path, node = find_entry(r, snap.tree, path)
        if node is not None and node.type == "file":
            write_file(r, node, raw_path, out)
            out.flush()
            return
        if out.isatty():
            raise UsageError(
                f"{display(raw_path)} is not a file: send its {archive_format} stream to a file or a pipe"
            )
        result = WRITERS[archive_format](r, snap.tree, path, out)
        out.flush()
    for where in result.sockets:
        warn(f"{where}: a socket, left out (a socket holds no data; its program makes it anew)")
    for where, why in result.skipped:
        warn(f"{where}: {why}")
    if result.skipped:
        count = len(result.skipped)
        raise PartialFailure(
            f"{count} {'entry is' if count == 1 else 'entries are'} not in the {archive_format} stream"
        )


# ------------------------------------------------------------------ cat


@click.command("cat")
@repo_options
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("object_id", metavar="[ID]", required=False)
@snapshot_filter_options
def cat_cmd(
    repo: str | None,
    password_file: str | None,
    kind: str,
    object_id: str | None,
    snapshot_filter: SnapshotFilter,
) -> None:
    """Print one repository object, decrypted and verified: `config`, or `snapshot|tree|index|key|pack
    ID` as JSON (a pack: its header), or `blob ID` as its raw bytes. A snapshot may be named as
    everywhere ("latest", with the filters); index, key and pack ids may be unique prefixes; tree and
    blob ids are whole."""
    with open_repository(repo, password_file) as r:
        if kind == "snapshot" and object_id is not None:
            _line(json.dumps(snapshot_document(*choose(r, object_id, snapshot_filter)), indent=2))
            return
        if kind == "blob":
            if object_id is None:
                raise UsageError("`cat blob` needs an id")
            data = cat_blob(r, object_id)
            out = _binary_stdout()
            out.write(data)
            out.flush()
            return
        document = cat_document(r, kind, object_id)
    _line(json.dumps(document, indent=2))


# ------------------------------------------------------------------ stats


@click.command("stats")
@repo_options
@click.argument("refs", nargs=-1, metavar="[SNAP...]")
@click.option(
    "--mode", type=click.Choice(MODES), default="restore-size", show_default=True, help="What to count."
)
@snapshot_filter_options
@json_option
def stats_cmd(
    repo: str | None,
    password_file: str | None,
    refs: tuple[str, ...],
    mode: str,
    snapshot_filter: SnapshotFilter,
    as_json: bool,
) -> None:
    """Sizes of snapshots (default: every snapshot the filters pass).

    restore-size: what restoring them writes; files-by-contents: files with the same content once;
    blobs-per-file: the distinct data chunks of the files; raw-data: what the repository stores for
    them (compressed, encrypted and uncompressed) and the deduplication ratio.
    """
    with open_repository(repo, password_file) as r:
        stats = snapshot_stats(r, choose_all(r, refs, snapshot_filter), mode)
    if stats.missing_blobs:
        missing = len(stats.missing_blobs)
        verb = "is" if missing == 1 else "are"
        warn(f"{counted(missing, 'referenced blob')} {verb} not in the index (run `shadowvault check`)")
    if as_json:
        print_json({"message_type": "summary", **stats.as_dict()})
        return
    rows = [
        ("Snapshots processed", str(stats.snapshots_count)),
        ("Total file count", str(stats.total_file_count)),
    ]
    if mode in ("blobs-per-file", "raw-data"):
        rows.append(("Total blob count", str(stats.total_blob_count)))
    rows.append(("Total size", format_size(stats.total_size)))
    if mode == "raw-data":
        rows.append(("Uncompressed size", format_size(stats.total_uncompressed_size)))
        rows.append(("Restore size", format_size(stats.restore_size)))
        ratio = stats.dedup_ratio
        rows.append(("Deduplication ratio", f"{ratio:.2f}x" if ratio is not None else "-"))
    listing(f"Stats in {mode} mode:")  # what was asked for: printed under --quiet too
    for label, value in rows:
        listing(f"{label + ':':>22} {value}")


# ------------------------------------------------------------------ tag


@click.command("tag")
@repo_options
@click.argument("refs", nargs=-1, metavar="[SNAP...]")
@click.option("--add", "add", multiple=True, metavar="TAG[,TAG...]", help="Add TAG (repeatable).")
@click.option("--remove", "remove", multiple=True, metavar="TAG[,TAG...]", help="Remove TAG (repeatable).")
@click.option(
    "--set",
    "set_to",
    multiple=True,
    metavar="TAG[,TAG...]",
    help="Replace every tag by these (repeatable; --set '' clears).",
)
@snapshot_filter_options
@json_option
def tag_cmd(
    repo: str | None,
    password_file: str | None,
    refs: tuple[str, ...],
    add: tuple[str, ...],
    remove: tuple[str, ...],
    set_to: tuple[str, ...],
    snapshot_filter: SnapshotFilter,
    as_json: bool,
) -> None:
    """Change the tags of snapshots (default: every snapshot the filters pass; --tag is a filter).

    Like restic, a changed snapshot is written anew (a new id; time and content kept, the id it
    replaces recorded as `original`) and the old file is removed.
    """
    change = TagChange(split_tags(add), split_tags(remove), split_tags(set_to) if set_to else None)
    with open_repository(repo, password_file, write=True, kind="tag") as r:
        done = retag(r, choose_all(r, refs, snapshot_filter), change)
    for item in done:
        if as_json:
            print_json(
                {
                    "message_type": "changed",
                    "old_id": item.old_id,
                    "new_id": item.new_id,
                    "old_tags": item.old_tags,
                    "tags": item.tags,
                }
            )
        else:
            info(f"snapshot {item.old_id[:8]} -> {item.new_id[:8]}: tags {','.join(item.tags) or '(none)'}")
    if not as_json:
        info(f"changed the tags of {counted(len(done), 'snapshot')}")


COMMANDS: list[click.Command] = [find_cmd, dump_cmd, cat_cmd, stats_cmd, tag_cmd]
