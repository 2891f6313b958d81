"""`shadowvault copy`: copy snapshots from another repository into this one (restic 0.14+'s options).

The destination is the usual --repo (with its password options); the source is --from-repo with
--from-password-file / --from-password-command, or their SHADOWVAULT_FROM_* variables. The work is
repo/copy.py's; this module parses, opens both repositories and prints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import click

from shadowvault.cli.output import emit, info, json_option
from shadowvault.cli.progress import progress
from shadowvault.cli.repo_options import (
    PasswordSources,
    given_on_command_line,
    open_repository,
    repo_options,
    resolve_password,
)
from shadowvault.cli.repository import format_size
from shadowvault.cli.snapshot_choice import SnapshotFilter, choose_all, snapshot_filter_options
from shadowvault.errors import UsageError
from shadowvault.repo.copy import CopiedSnapshot, CopyResult, copy_snapshots
from shadowvault.repo.repository import Repository

FROM_REPO_ENV = "SHADOWVAULT_FROM_REPOSITORY"
FROM_PASSWORD_ENV = "SHADOWVAULT_FROM_PASSWORD"
FROM_PASSWORD_FILE_ENV = "SHADOWVAULT_FROM_PASSWORD_FILE"
FROM_PASSWORD_COMMAND_ENV = "SHADOWVAULT_FROM_PASSWORD_COMMAND"


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
        "blobs_added": result.blobs_added,
        "raw_bytes_added": result.raw_bytes_added,
        "stored_bytes_added": result.stored_bytes_added,
    }


@click.command("copy")
@repo_options
@click.option(
    "--from-repo",
    envvar=FROM_REPO_ENV,
    show_envvar=True,
    metavar="PATH",
    default=None,
    help="The repository to copy from: a path, file:// or s3: URL.",
)
@click.option(
    "--from-password-file",
    type=click.Path(dir_okay=False),
    envvar=FROM_PASSWORD_FILE_ENV,
    show_envvar=True,
    default=None,
    help=f"The source's password, from this file's first line (else ${FROM_PASSWORD_ENV}, else a prompt).",
)
@click.option(
    "--from-password-command",
    envvar=FROM_PASSWORD_COMMAND_ENV,
    show_envvar=True,
    metavar="CMD",
    default=None,
    help="The source's password: the first line CMD prints (split like a shell would, run without one).",
)
@snapshot_filter_options
@click.argument("snapshots", nargs=-1)
@json_option
@click.pass_context
def copy_cmd(
    ctx: click.Context,
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
    if not from_repo:
        raise UsageError(f"no repository to copy from: use --from-repo PATH or set {FROM_REPO_ENV}")
    source_password = PasswordSources(
        command=from_password_command,
        command_given=bool(from_password_command) and given_on_command_line(ctx, "from_password_command"),
        file=from_password_file,
        file_given=bool(from_password_file) and given_on_command_line(ctx, "from_password_file"),
        password_env=FROM_PASSWORD_ENV,
        options=("--from-password-command", "--from-password-file"),
        label="source repository password",
    )
    source_location = Repository.validate_path(from_repo)
    with Repository.open(source_location, resolve_password(source_password)) as source:
        selected = choose_all(source, snapshots, snapshot_filter)
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

    def human() -> None:
        info(
            f"{len(result.copied)} snapshot{'s' if len(result.copied) != 1 else ''} copied,"
            f" {len(result.skipped)} already there; {result.blobs_added} blobs"
            f" ({format_size(result.raw_bytes_added)}) added"
        )

    emit(as_json, _result_json(result), human)


COMMANDS: list[click.Command] = [copy_cmd]
