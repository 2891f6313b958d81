"""What the daemon's runs do: a backup, a files restore or a jobs.d job, each through the jobs/ layer.

The daemon is the coordinator, so a backup it runs makes its shadow set in its own process. The
repository password comes in the request (`password`) or from a file root can read
(`password_file`); it is never logged, never stored with the run, and never passed to a child.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from shadowvault.archive.exclude_rules import parse_tag_rule
from shadowvault.archive.restore import Overwrite, RestoreStats
from shadowvault.archive.time_option import parse_backup_time
from shadowvault.archive.walk_stats import WalkStats
from shadowvault.display import exact_fields
from shadowvault.errors import JobCancelledError, PartialFailure, UsageError
from shadowvault.jobs import definitions, scheduled
from shadowvault.jobs.backup import BackupRequest, run_backup
from shadowvault.jobs.restore_files import FilesRestoreRequest, run_files_restore
from shadowvault.repo.password_file import read_password_file
from shadowvault.repo.repository import Repository
from shadowvault.repo.storage import has_scheme
from shadowvault.repo.tag_lists import given_host, given_tags
from shadowvault.service.request_body import absolute
from shadowvault.service.runs import Run, Work

Follow = Callable[[Callable[[], dict[str, Any]]], None]


class RepositoryAccess(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Which repository, and its password (given, or in a file the daemon reads)."""

    repository: str
    password: str | None = None
    password_file: str | None = None

    def __post_init__(self) -> None:
        """Checked as the run is asked for (400), not when it runs."""
        if (self.password is None) == (self.password_file is None):
            raise ValueError('give the repository password as "password" or "password_file"')
        if not has_scheme(self.repository):
            absolute([self.repository], "repository")
        absolute([self.password_file] if self.password_file is not None else [], "password_file")

    def open(self, *, write: bool, kind: str) -> Repository:
        password = self.password
        if password is None:
            password = read_password_file(str(self.password_file), UsageError)
        return Repository.open(Repository.validate_path(self.repository), password, write=write, kind=kind)


class BackupBody(RepositoryAccess, kw_only=True, forbid_unknown_fields=True):
    """The body of POST /v1/backups."""

    paths: list[str]
    excludes: list[str] = []
    tags: list[str] = []
    writers: list[str] = []
    provider: str = "auto"
    host: str | None = None
    parent: str | None = None
    full: bool = False
    one_file_system: bool = False
    include_snapshots: bool = False
    exclude_caches: bool = False
    exclude_larger_than: int | None = None  # bytes
    exclude_if_present: list[str] = []  # restic's NAME[:HEADER]
    iexcludes: list[str] = []
    time: str | None = None  # "YYYY-MM-DD HH:MM:SS", the daemon's local time, as `backup --time`
    ignore_inode: bool = False
    ignore_ctime: bool = False
    with_atime: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        absolute(self.paths, "paths")


class RestoreBody(RepositoryAccess, kw_only=True, forbid_unknown_fields=True):
    """The body of POST /v1/restores."""

    snapshot: str
    target: str
    subpath: str = "/"
    includes: list[str] = []
    excludes: list[str] = []
    iincludes: list[str] = []  # matched ignoring case
    iexcludes: list[str] = []
    overwrite: Overwrite = Overwrite.NEVER
    verify: bool = False
    numeric_owner: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        absolute([self.target], "target")


def _followed_walk(run: Run, follow: Follow) -> WalkStats:
    """The counters of a backup walk that stops when the run is cancelled, reported as it goes."""
    stats = WalkStats(cancellation=run.cancellation)
    follow(lambda: {**stats.as_dict(), "current_file": stats.current})
    return stats


def _entries(found: list[tuple[str, str]]) -> list[dict[str, str]]:
    """(path, reason) pairs as the JSON objects a summary lists."""
    return [{"path": path, "reason": reason} for path, reason in found]


def _restore_entries(found: list[tuple[bytes, str]]) -> list[dict[str, str]]:
    """A restore's (snapshot path, reason) pairs as JSON objects, each path exact (`path_bytes`
    when it is not UTF-8, as `ls` gives it): the command names them by their places in the target."""
    return [{**exact_fields("path", path), "reason": reason} for path, reason in found]


def _exit_status(errors: list[tuple[str, str]] | list[tuple[bytes, str]]) -> int:
    return PartialFailure.exit_code if errors else 0


def backup_work(body: BackupBody) -> Work:
    if not body.paths:
        raise UsageError("name at least one path to back up")
    tags = given_tags(body.tags)
    host = given_host(body.host)
    if body.exclude_larger_than is not None and body.exclude_larger_than <= 0:
        raise UsageError("exclude_larger_than is a number of bytes above 0")
    for spec in body.exclude_if_present:
        parse_tag_rule(spec, "exclude_if_present")
    snapshot_time = parse_backup_time(body.time, "time") if body.time is not None else None

    def work(run: Run, follow: Follow) -> tuple[dict[str, Any], int]:
        stats = _followed_walk(run, follow)
        request = BackupRequest(
            paths=list(body.paths),
            excludes=list(body.excludes),
            tags=list(tags),
            writers=list(body.writers),
            provider=body.provider,
            host=host,
            parent=body.parent,
            full=body.full,
            one_file_system=body.one_file_system,
            include_snapshots=body.include_snapshots,
            exclude_caches=body.exclude_caches,
            exclude_larger_than=body.exclude_larger_than,
            exclude_if_present=list(body.exclude_if_present),
            iexcludes=list(body.iexcludes),
            time=snapshot_time,
            ignore_inode=body.ignore_inode,
            ignore_ctime=body.ignore_ctime,
            with_atime=body.with_atime,
        )
        with body.open(write=True, kind="backup") as repo:
            result = run_backup(repo, request, stats=stats)
        summary = {
            **result.summary(),
            "errors": _entries(result.errors),
            "file_warnings": _entries(result.file_warnings),
            "notes": result.warnings,
        }
        return summary, _exit_status(result.errors)

    return work


def restore_work(body: RestoreBody) -> Work:
    def work(run: Run, follow: Follow) -> tuple[dict[str, Any], int]:
        stats = RestoreStats(cancellation=run.cancellation)
        follow(stats.as_dict)
        request = FilesRestoreRequest(
            snapshot=body.snapshot,
            target=body.target,
            subpath=body.subpath,
            includes=list(body.includes),
            excludes=list(body.excludes),
            iincludes=list(body.iincludes),
            iexcludes=list(body.iexcludes),
            overwrite=body.overwrite.value,
            verify=body.verify,
            numeric_owner=body.numeric_owner,
        )
        with body.open(write=False, kind="restore") as repo:
            result = run_files_restore(repo, request, stats=stats)
        summary = {
            "snapshot_id": result.snapshot_id,
            **stats.as_dict(),
            "duration": round(result.duration, 3),
            "errors": _restore_entries(result.errors),
            "warnings": _restore_entries(stats.warnings),
            "kept_paths": _restore_entries(stats.kept),
            # the snapshot directory the target stands for: where each path above is in the target
            **(exact_fields("target_stands_for", stats.places.top) if stats.places is not None else {}),
        }
        return summary, _exit_status(result.errors)

    return work


def job_work(name: str) -> Work:
    definition = definitions.find(name)

    def work(run: Run, follow: Follow) -> tuple[dict[str, Any], int]:
        stats = _followed_walk(run, follow)
        record = scheduled.run_job(definition, stats=stats)
        if run.cancellation.cancelled:
            raise JobCancelledError(run.cancellation.reason)
        return msgspec.to_builtins(record), record.exit_status

    return work
