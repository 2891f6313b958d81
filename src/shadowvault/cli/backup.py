"""CLI command: backup (parse the options, open the repository, hand over to cli/backup_run.py).

This module loads little (options, no jobs): the repository's key is unlocked before the modules
that run the backup are loaded (cli/repo_options.py says why).
"""

from __future__ import annotations

import sys

import click

from shadowvault.archive.exclude_rules import parse_size
from shadowvault.archive.path_lists import read_pattern_files
from shadowvault.cli.backup_options import (
    BackupArguments,
    backup_selection_options,
    listed_paths,
)
from shadowvault.cli.backup_restic_options import ResticOptions, backup_restic_options
from shadowvault.cli.component_options import backup_component_options
from shadowvault.cli.output import json_option
from shadowvault.cli.repo_options import open_repository, repo_options
from shadowvault.errors import UsageError
from shadowvault.repo.tag_lists import given_host, given_tags
from shadowvault.shadow.providers.names import AUTO, NO_PROVIDER, PROVIDER_NAMES

PROVIDERS = [AUTO, *PROVIDER_NAMES, NO_PROVIDER]  # none: read the live files, no shadow set


@click.command("backup")
@repo_options
@click.argument("paths", nargs=-1, required=False)
@click.option("--exclude", "excludes", multiple=True, metavar="GLOB", help="Leave out matching paths.")
@click.option(
    "--tag", "tags", multiple=True, metavar="TAG[,TAG...]", help="Tag the snapshot (repeatable, as restic)."
)
@click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default="auto",
    show_default=True,
    help="How volumes are shadowed; `none` reads the live files without a shadow set.",
)
@click.option("--writer", "writers", multiple=True, metavar="NAME[:INSTANCE]", help="Writer to include.")
@click.option("--host", default=None, help="Host name to record (default: this machine's).")
@click.option("--parent", default=None, metavar="SNAP", help="Compare against this snapshot.")
@click.option("--force", is_flag=True, help="Read every file, ignoring the parent snapshot.")
@click.option(
    "--one-file-system",
    "-x",
    is_flag=True,
    help="Do not read the filesystems mounted below PATHS (each one skipped is named).",
)
@click.option(
    "--include-snapshots",
    is_flag=True,
    help="Read other tools' read-only btrfs snapshots below PATHS (snapper's), left out by default.",
)
@backup_selection_options
@backup_restic_options
@backup_component_options
@json_option
def backup_cmd(
    repo: str | None,
    password_file: str | None,
    paths: tuple[str, ...],
    excludes: tuple[str, ...],
    tags: tuple[str, ...],
    provider: str,
    writers: tuple[str, ...],
    host: str | None,
    parent: str | None,
    force: bool,
    one_file_system: bool,
    include_snapshots: bool,
    dry_run: bool,
    files_from: tuple[str, ...],
    files_from_verbatim: tuple[str, ...],
    files_from_raw: tuple[str, ...],
    exclude_files: tuple[str, ...],
    exclude_caches: bool,
    exclude_larger_than: str | None,
    from_stdin: bool,
    stdin_filename: str,
    components: tuple[str, ...],
    source_root: str,
    users: str | None,
    as_json: bool,
    restic: ResticOptions,
) -> None:
    """Back up PATHS into the repository, reading a shadow set where the volumes allow it.

    Unreadable files are reported and skipped; the snapshot is saved and the exit code is 3.
    A filesystem mounted below PATHS is read through its own shadow (unless --one-file-system);
    kernel filesystems (proc, sysfs, ...) are never read; other tools' read-only btrfs snapshots
    (snapper's) are left out unless --include-snapshots. What is skipped is named, and noted in
    the backup manifest. Exclude rules (--exclude, --exclude-file, --exclude-caches,
    --exclude-if-present, --iexclude, --exclude-larger-than) are counted in the summary as
    skipped. --dry-run reads and chunks everything and lists what would change, and writes
    nothing to the repository.
    """
    larger_than = parse_size(exclude_larger_than) if exclude_larger_than is not None else None
    if from_stdin and (paths or files_from or files_from_verbatim or files_from_raw or components):
        raise UsageError("--stdin stores what is piped in: no PATHS, --files-from or --component with it")
    paths = (*paths, *listed_paths(files_from, files_from_verbatim, files_from_raw))
    excludes = (*excludes, *read_pattern_files(exclude_files))
    if not components and not paths and not from_stdin:
        raise UsageError("give the PATHS to back up, or --component NAME")
    if "" in paths:  # an unset variable in `backup "$DIR"`: not the current directory
        raise UsageError("an empty path was given: name each path to back up ('.' for this directory)")
    if from_stdin and sys.stdin.isatty():
        raise UsageError("--stdin reads what is piped in, and stdin is a terminal")
    arguments = BackupArguments(
        paths=paths,
        excludes=excludes,
        tags=given_tags(tags),
        provider=provider,
        writers=writers,
        host=given_host(host),
        parent=parent,
        force=force,
        one_file_system=one_file_system,
        include_snapshots=include_snapshots,
        dry_run=dry_run,
        exclude_larger_than=larger_than,
        exclude_caches=exclude_caches,
        from_stdin=from_stdin,
        stdin_filename=stdin_filename,
        components=components,
        source_root=source_root,
        users=users,
        as_json=as_json,
        restic=restic,
    )
    with open_repository(repo, password_file, write=not dry_run) as repository:
        from shadowvault.cli.backup_run import run_backup_command  # once the key is unlocked

        run_backup_command(repository, arguments)


COMMANDS: list[click.Command] = [backup_cmd]
