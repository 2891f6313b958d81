"""`restore` through the daemon: the daemon restores, this command shows the same.

For files, the run's status events feed the same RestoreStats the in-process restore fills (its
summary names the snapshot directory the target stands for, so the places printed are below the
target as the user named it, not the absolute path the daemon was given; every path is exact, with
`path_bytes` where it is not UTF-8, as display.exact_fields writes it); for
components and writers, the run's plan events and summary are the JSON the in-process job reports
(jobs/application_restores.py). Either way the same code prints them. The password is read here
(file, environment or prompt) and sent to the daemon with the request. A restore by a user who is
not root, or from a repository that is not on this machine's filesystem, runs in this process
(cli/coordination.py's restore_daemon).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec

from shadowvault.archive.restore import RestoreStats
from shadowvault.archive.restore_places import TargetPlaces
from shadowvault.cli.coordination import finished_run, restore_daemon
from shadowvault.cli.repo_options import open_repository, read_password, repo_path
from shadowvault.cli.snapshot_choice import SnapshotFilter, choose, needs_choice
from shadowvault.client import Client
from shadowvault.display import exact_bytes
from shadowvault.jobs.application_restores import WriterRestoreOrder
from shadowvault.jobs.restore_component import ComponentRestoreRequest
from shadowvault.jobs.restore_files import FilesRestoreRequest
from shadowvault.repo.repository import Repository

COUNTERS = ("files", "dirs", "others", "bytes_written", "total_bytes", "skipped", "verified")


def _location(repo: str | None) -> str:
    location = repo_path(repo)
    return location if "://" in location else os.path.abspath(location)


def restore_through_daemon(
    client: Client,
    repo: str | None,
    password_file: str | None,
    request: FilesRestoreRequest,
    stats: RestoreStats,
) -> str:
    """Run the files restore in the daemon, following it into `stats`; the snapshot id restored."""
    password = read_password(password_file)
    start = partial(
        client.start_restore,
        _location(repo),
        request.snapshot,
        os.path.abspath(request.target),
        password=password,
        subpath=request.subpath,
        includes=request.includes,
        excludes=request.excludes,
        iincludes=request.iincludes,
        iexcludes=request.iexcludes,
        overwrite=request.overwrite,
        verify=request.verify,
        numeric_owner=request.numeric_owner,
    )

    def follow(event: dict[str, Any]) -> None:
        if event["message_type"] in ("status", "summary"):
            with stats.lock:
                for counter in COUNTERS:
                    setattr(stats, counter, int(event.get(counter, getattr(stats, counter))))

    summary = finished_run(client, start, follow)
    with stats.lock:
        stats.errors = [(exact_bytes(e, "path"), e["reason"]) for e in summary.get("errors", [])]
        stats.warnings = [(exact_bytes(w, "path"), w["reason"]) for w in summary.get("warnings", [])]
        stats.kept = [(exact_bytes(k, "path"), k["reason"]) for k in summary.get("kept_paths", [])]
        if "target_stands_for" in summary:  # the places below the target as named here, not the daemon's
            top = exact_bytes(summary, "target_stands_for")
            stats.places = TargetPlaces(os.fsencode(request.target), top)
    return summary["snapshot_id"]


Summary = dict[str, Any]


def here_or_in_daemon(
    repo: str | None,
    password_file: str | None,
    ref: str,
    snapshot_filter: SnapshotFilter,
    here: Callable[[Repository, str], Summary],
    there: Callable[[Client, str], Summary],
) -> Summary:
    """Run a restore job in this process (`here`, on the open repository) or, when the daemon
    answers and may do it as the caller would (cli/coordination.py), in the daemon (`there`); each
    gets the snapshot ref, chosen here when filters need it."""
    client = restore_daemon(repo_path(repo))
    if client is None:
        with open_repository(repo, password_file) as r:
            return here(r, choose(r, ref, snapshot_filter)[0])
    if needs_choice(ref, snapshot_filter):  # the daemon looks up plain refs itself
        with open_repository(repo, password_file) as r:
            ref = choose(r, ref, snapshot_filter)[0]
    return there(client, ref)


def _as_json(value: Any) -> Any:
    return msgspec.to_builtins(value, enc_hook=str)  # the target root is a Path


def component_restore_through_daemon(
    client: Client, repo: str | None, password_file: str | None, request: ComponentRestoreRequest
) -> Summary:
    """Run the component restore in the daemon; its summary (jobs/application_restores.py)."""
    body, password = _as_json(request), read_password(password_file)
    return finished_run(
        client, lambda: client.start_component_restore(_location(repo), body, password=password)
    )


def writer_restore_through_daemon(
    client: Client,
    repo: str | None,
    password_file: str | None,
    order: WriterRestoreOrder,
    emit: Callable[[str, dict[str, Any]], None],
) -> Summary:
    """Run the writer restore in the daemon, its plan and file_error events to `emit`; its summary."""
    body, password = _as_json(order), read_password(password_file)

    def follow(event: dict[str, Any]) -> None:
        if event["message_type"] in ("writer_plan", "authoritative_plan", "file_error"):
            emit(
                event["message_type"], {k: v for k, v in event.items() if k not in ("message_type", "run_id")}
            )

    return finished_run(
        client, lambda: client.start_writer_restore(_location(repo), body, password=password), follow
    )
