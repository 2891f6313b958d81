"""More of restic's backup options: --exclude-if-present, --iexclude, --iexclude-file, --time,
--ignore-inode, --ignore-ctime, --with-atime.

Apart from cli/backup_options.py (near its size limit), and handed to the command as one value:
`backup_restic_options` adds the options and gives the command a `restic` argument, a checked
`ResticOptions` (a bad value is one line, exit 2, before the repository is opened). The rules live
in archive/ (exclude_rules, patterns, time_option, parent_reuse, metadata).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import click

from shadowvault.archive.exclude_rules import tag_rules
from shadowvault.archive.path_lists import read_pattern_files
from shadowvault.archive.patterns import compile_glob
from shadowvault.archive.time_option import parse_backup_time

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ResticOptions:
    """The values of these options, checked, for cli/backup_run.py's BackupRequest."""

    exclude_if_present: tuple[str, ...] = ()  # NAME[:HEADER] specs
    iexcludes: tuple[str, ...] = ()  # --iexclude and the globs of --iexclude-file
    time: float | None = None  # seconds since the epoch; None: now
    ignore_inode: bool = False
    ignore_ctime: bool = False
    with_atime: bool = False


_OPTIONS = [
    click.option(
        "--exclude-if-present",
        "exclude_if_present",
        multiple=True,
        metavar="FILENAME[:HEADER]",
        help="Leave out the contents of directories holding FILENAME (a file starting with HEADER, "
        "when given); the tag is kept. Repeatable.",
    ),
    click.option(
        "--iexclude",
        "iexcludes",
        multiple=True,
        metavar="GLOB",
        help="Like --exclude, ignoring case. Repeatable.",
    ),
    click.option(
        "--iexclude-file",
        "iexclude_files",
        multiple=True,
        metavar="FILE",
        type=click.Path(dir_okay=False),
        help="Like --exclude-file, ignoring case. Repeatable.",
    ),
    click.option(
        "--time",
        "time_text",
        default=None,
        metavar="'YYYY-MM-DD HH:MM:SS'",
        help="The snapshot's time (local) instead of now, for importing old data.",
    ),
    click.option(
        "--ignore-inode",
        is_flag=True,
        help="A file is unchanged whatever its inode number (filesystems where it is not stable).",
    ),
    click.option(
        "--ignore-ctime",
        is_flag=True,
        help="A file is unchanged whatever its ctime (filesystems where it is not stable).",
    ),
    click.option(
        "--with-atime", is_flag=True, help="Record access times (else each is the mtime, as restic)."
    ),
]


def backup_restic_options(func: F) -> F:
    """Add the options (in --help order); the command gets them as `restic: ResticOptions`."""

    @functools.wraps(func)
    def command(
        *args: Any,
        exclude_if_present: tuple[str, ...],
        iexcludes: tuple[str, ...],
        iexclude_files: tuple[str, ...],
        time_text: str | None,
        ignore_inode: bool,
        ignore_ctime: bool,
        with_atime: bool,
        **kwargs: Any,
    ) -> Any:
        tag_rules(False, exclude_if_present)  # checked now: one line, before the repository opens
        listed = read_pattern_files(iexclude_files, "iexclude-file")
        for pattern in (*iexcludes, *listed):
            compile_glob(pattern, True)
        kwargs["restic"] = ResticOptions(
            exclude_if_present=exclude_if_present,
            iexcludes=(*iexcludes, *listed),
            time=parse_backup_time(time_text) if time_text is not None else None,
            ignore_inode=ignore_inode,
            ignore_ctime=ignore_ctime,
            with_atime=with_atime,
        )
        return func(*args, **kwargs)

    decorated: Callable[..., Any] = command
    for option in reversed(_OPTIONS):
        decorated = option(decorated)
    return cast(F, decorated)
