"""The backup options restic users reach for, and what they print: --dry-run, --files-from (and
-verbatim, -raw), --exclude-file, --exclude-caches, --exclude-larger-than, --stdin.

Parsing only: the rules live in archive/ (path_lists, exclude_rules, stdin_source); cli/backup.py
calls `backup_selection_options` and hands `BackupArguments` to cli/backup_run.py, which prints
what a dry run would change and what the rules left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from shadowvault.archive.path_lists import ListFormat, read_path_list
from shadowvault.cli.backup_restic_options import ResticOptions

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class BackupArguments:
    """What the backup command was asked, parsed and checked, for cli/backup_run.py."""

    paths: tuple[str, ...]
    excludes: tuple[str, ...]
    tags: tuple[str, ...]
    provider: str
    writers: tuple[str, ...]
    host: str | None
    parent: str | None
    force: bool
    one_file_system: bool
    include_snapshots: bool
    dry_run: bool
    exclude_larger_than: int | None
    exclude_caches: bool
    from_stdin: bool
    stdin_filename: str
    components: tuple[str, ...]
    source_root: str
    users: str | None
    as_json: bool
    restic: ResticOptions = field(default_factory=ResticOptions)  # cli/backup_restic_options.py


def backup_selection_options(func: F) -> F:
    """Add the options that choose what a backup reads (in --help order)."""
    options = [
        click.option(
            "--dry-run",
            "-n",
            is_flag=True,
            help="Read and chunk everything, say what would be added; write nothing.",
        ),
        click.option(
            "--files-from",
            "files_from",
            multiple=True,
            metavar="FILE",
            type=click.Path(dir_okay=False),
            help="Back up the paths (or globs) listed in FILE, one a line (# comments, blank lines ignored).",
        ),
        click.option(
            "--files-from-verbatim",
            "files_from_verbatim",
            multiple=True,
            metavar="FILE",
            type=click.Path(dir_okay=False),
            help="Like --files-from, each line taken as it is (no comments, no trimming).",
        ),
        click.option(
            "--files-from-raw",
            "files_from_raw",
            multiple=True,
            metavar="FILE",
            type=click.Path(dir_okay=False),
            help="Like --files-from, the paths separated by NUL bytes (find -print0).",
        ),
        click.option(
            "--exclude-file",
            "exclude_files",
            multiple=True,
            metavar="FILE",
            type=click.Path(dir_okay=False),
            help="Leave out the globs listed in FILE, one a line (the --exclude syntax).",
        ),
        click.option(
            "--exclude-caches",
            is_flag=True,
            help="Leave out the contents of directories holding a valid CACHEDIR.TAG (the tag is kept).",
        ),
        click.option(
            "--exclude-larger-than",
            metavar="SIZE",
            default=None,
            help="Leave out files larger than SIZE (500k, 10M, 2G, 1GiB, ...).",
        ),
        click.option(
            "--stdin",
            "from_stdin",
            is_flag=True,
            help="Store what is piped in as one file (see --stdin-filename); no PATHS.",
        ),
        click.option(
            "--stdin-filename",
            default="stdin",
            show_default=True,
            metavar="NAME",
            help="The file name --stdin stores the stream as.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def listed_paths(files_from: tuple[str, ...], verbatim: tuple[str, ...], raw: tuple[str, ...]) -> list[str]:
    """Every path the --files-from* options list, in order."""
    paths: list[str] = []
    for form, files in (
        (ListFormat.LINES, files_from),
        (ListFormat.VERBATIM, verbatim),
        (ListFormat.RAW, raw),
    ):
        for name in files:
            paths += read_path_list(name, form)
    return paths
