"""CLI command: versions (every distinct version of one path across snapshots, and bringing one back)."""

from __future__ import annotations

import os
import time

import click

from shadowvault.archive.listing import display, path_fields
from shadowvault.archive.versions import Version, find_versions, restore_version
from shadowvault.cli.output import info, json_option, print_json, print_table
from shadowvault.cli.repo_options import open_repository, repo_options
from shadowvault.errors import UsageError
from shadowvault.repo.snapshots import filter_snapshots


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _json(version: Version) -> dict:
    node = version.node
    return {
        "message_type": "version",
        "number": version.number,
        "type": node.type,
        "size": node.size,
        "mtime_ns": node.mtime_ns,
        "time": version.time,
        "snapshot_id": version.snapshot_id,
        "snapshots": version.snapshots,
    }


@click.command("versions")
@repo_options
@click.argument("path")
@click.option("--host", "hosts", multiple=True, help="Only snapshots of this host (repeatable: any of them).")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    help="Only snapshots with this tag (TAG,TAG,...: all of these; repeatable: any of the lists).",
)
@click.option(
    "--restore",
    "number",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Bring version N back next to PATH, as PATH.~N~ (or over PATH with --overwrite).",
)
@click.option("--overwrite", is_flag=True, help="With --restore: replace PATH itself (atomically).")
@json_option
def versions_cmd(
    repo: str | None,
    password_file: str | None,
    path: str,
    hosts: tuple[str, ...],
    tags: tuple[str, ...],
    number: int | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """List every distinct version of PATH (a file, symlink or other non-directory) across the
    snapshots, oldest first: when it first appeared, its size, and the snapshot that holds it.

    PATH is the path as it was backed up (a relative PATH is taken from the current directory).
    With --restore N, version N is laid down next to PATH as PATH.~N~ with its owner, mode, times
    and xattrs, or over PATH with --overwrite; it appears whole under its final name or not at all.
    """
    if overwrite and number is None:
        raise UsageError("--overwrite goes with --restore N")
    if not path:  # abspath("") is the current directory: an empty variable would name it
        raise UsageError("PATH is empty: give the path of a file as it was backed up")
    target = os.path.abspath(path)
    with open_repository(repo, password_file) as r:
        snapshots = filter_snapshots(r.list_snapshots(), hosts=hosts, tags=tags)
        versions = find_versions(r, target, snapshots)
        if number is None:
            if as_json:
                for version in versions:
                    print_json({**_json(version), **path_fields(os.fsencode(target))})
                return
            print_table(
                ["N", "first seen", "type", "size", "modified", "snapshot", "in snapshots"],
                [
                    (
                        v.number,
                        _when(v.time),
                        v.node.type,
                        v.node.size,
                        _when(v.node.mtime_ns / 1e9),
                        v.snapshot_id[:8],
                        len(v.snapshots),
                    )
                    for v in versions
                ],
                title=f"versions of {display(os.fsencode(target))}",
            )
            return
        if number > len(versions):
            raise UsageError(
                f"there is no version {number}: {display(os.fsencode(target))} has {len(versions)}"
            )
        chosen = versions[number - 1]
        final = restore_version(r, chosen, os.fsencode(target), overwrite=overwrite)
    if as_json:
        # the type last: _json's own ("version") would otherwise stand for what was restored
        print_json({**_json(chosen), **path_fields(final), "message_type": "restored"})
    else:
        info(f"restored version {number} (snapshot {chosen.snapshot_id[:8]}) as {display(final)}")


COMMANDS: list[click.Command] = [versions_cmd]
