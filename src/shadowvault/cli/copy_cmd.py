"""`shadowvault copy`: copy snapshots from another repository into this one (restic 0.14+'s options).

The destination is the usual --repo (with its password options); the source is --from-repo with
--from-password-file / --from-password-command, or their SHADOWVAULT_FROM_* variables
(from_repo_options.py). The work is repo/copy.py's; this module parses, opens both and prints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import click

from shadowvault.cli.from_repo_options import from_repo_options, open_source_repository
from shadowvault.cli.output import emit, info, json_option, warn
from shadowvault.cli.progress import progress
from shadowvault.cli.repo_options import open_repository, repo_options
from shadowvault.cli.repository import format_size
from shadowvault.cli.snapshot_choice import SnapshotFilter, choose, choose_all, snapshot_filter_options
from shadowvault.display import counted
from shadowvault.errors import IntegrityError, PartialFailure, RepositoryError
from shadowvault.repo.copy import CopiedSnapshot, CopyResult, FailedSnapshot, copy_snapshots
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot, chronological


def _describe(done: CopiedSnapshot) -> str:
    snap = done.snapshot
    what = f"snapshot {done.source_id[:8]} ({snap.host}: {', '.join(snap.paths) or '-'})"
    if done.skipped:
        return f"{what} is already in the destination as {done.copy_id[:8]}"
    return f"copied {what} as {done.copy_id[:8]}"


@dataclass
class CopyProgress:
    """What the progress line and the --json status lines show."""

    snapshots_total: int
    snapshots_done: int = 0
    blobs_read: int = 0
    bytes_read: int = 0

    def status(self) -> dict[str, Any]:
        return {"message_type": "status", **dataclasses.asdict(self)}


def _line(status: dict[str, Any]) -> str:
    return (
        f"snapshot {status['snapshots_done'] + 1} of {status['snapshots_total']}:"
        f" {status['blobs_read']} blobs, {status['bytes_read'] / (1 << 20):.1f} MiB read"
    )


def _result_json(result: CopyResult) -> dict:
    return {
        "message_type": "summary",
        "copied": [{"source": s.source_id, "copy": s.copy_id} for s in result.copied],
        "skipped": [{"source": s.source_id, "copy": s.copy_id} for s in result.skipped],
        "failed": [{"source": f.source_id, "error": f.why} for f in result.failed],
        "blobs_added": result.blobs_added,
        "raw_bytes_added": result.raw_bytes_added,
        "stored_bytes_added": result.stored_bytes_added,
        "blobs_read": result.blobs_read,
        "bytes_read": result.bytes_read,
    }


def _selected(
    source: Repository, refs: tuple[str, ...], snapshot_filter: SnapshotFilter
) -> tuple[list[tuple[str, Snapshot]], list[FailedSnapshot]]:
    """The snapshots to copy, oldest first, and the damaged snapshot files among them: each named
    one that is damaged, or with no names and no filter every damaged one (a filter cannot judge
    a file that does not decode; listing warned about those)."""
    if not refs:
        selected = choose_all(source, refs, snapshot_filter)  # a listing: it names the damaged files
        if snapshot_filter:
            return selected, []
        return selected, [FailedSnapshot(sid, why) for sid, why in source.damaged_snapshots.items()]
    chosen: dict[str, Snapshot] = {}
    damaged: list[FailedSnapshot] = []
    for ref in refs:
        try:
            snapshot_id, snapshot = choose(source, ref, snapshot_filter)
        except IntegrityError as err:  # an id or prefix naming a damaged file ("latest" skips them)
            damaged.append(FailedSnapshot(source.resolve_snapshot_id(ref), str(err)))
            continue
        chosen[snapshot_id] = snapshot
    return sorted(chosen.items(), key=chronological), damaged


def _say_failures(result: CopyResult) -> None:
    """Name each snapshot not copied, then exit as a partial failure (3), or 1 when none was."""
    if not result.failed:
        return
    for failed in result.failed:
        warn(f"snapshot {failed.source_id[:8]} was not copied: {failed.why}")
    not_copied = counted(len(result.failed), "snapshot")
    if not result.snapshots:
        raise RepositoryError(f"nothing was copied: {not_copied} could not be read from the source")
    raise PartialFailure(f"{not_copied} could not be copied (damaged in the source); the others were")


@click.command("copy")
@repo_options
@from_repo_options
@snapshot_filter_options
@click.argument("snapshots", nargs=-1)
@json_option
def copy_cmd(
    repo: str | None,
    password_file: str | None,
    from_repo: str | None,
    from_password_file: str | None,
    from_password_command: str | None,
    snapshots: tuple[str, ...],
    as_json: bool,
    snapshot_filter: SnapshotFilter,
) -> None:
    """Copy SNAPSHOTS (ids, prefixes or "latest"; all when none, narrowed by --path/--host/--tag as
    docs/commands-inspect.md describes) from --from-repo into --repo.

    Data is re-encrypted under the destination's keys and only what it lacks is stored; a snapshot
    copied before (its id is recorded in the copy as `original`) is skipped. An interrupted copy
    leaves the destination valid: run it again to finish.
    """
    with open_source_repository(from_repo, from_password_file, from_password_command) as source:
        selected, damaged = _selected(source, snapshots, snapshot_filter)
        done = CopyProgress(snapshots_total=len(selected))

        def on_snapshot(copied: CopiedSnapshot) -> None:
            done.snapshots_done += 1
            if not as_json:
                info(_describe(copied))

        def on_blob(size: int) -> None:
            done.blobs_read += 1
            done.bytes_read += size

        with (
            open_repository(repo, password_file, write=True, kind="copy") as destination,
            progress(done.status, _line, as_json),
        ):
            result = copy_snapshots(source, destination, selected, on_snapshot=on_snapshot, on_blob=on_blob)
    result.failed[:0] = damaged

    def human() -> None:
        info(
            f"{counted(len(result.copied), 'snapshot')} copied,"
            f" {len(result.skipped)} already there; {result.blobs_added} blobs"
            f" ({format_size(result.raw_bytes_added)}) added"
            + (f"; {len(result.failed)} not copied" if result.failed else "")
        )

    emit(as_json, _result_json(result), human)
    _say_failures(result)


COMMANDS: list[click.Command] = [copy_cmd]
