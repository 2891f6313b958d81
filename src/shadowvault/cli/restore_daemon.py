"""`restore` of files through the daemon: the daemon lays the files down, this command shows the same.

The run's status events feed the same RestoreStats the in-process restore fills, so the progress
line, the warnings, the errors and the summary are printed by the same code either way. The
password is read here (file, environment or prompt) and sent to the daemon with the request.
"""

from __future__ import annotations

import os
from typing import Any

from shadowvault.archive.restore import RestoreStats
from shadowvault.cli.coordination import finished_run
from shadowvault.cli.repo_options import read_password, repo_path
from shadowvault.client import Client
from shadowvault.jobs.restore_files import FilesRestoreRequest

COUNTERS = ("files", "dirs", "others", "bytes_written", "skipped", "verified")


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
    run = client.start_restore(
        _location(repo),
        request.snapshot,
        os.path.abspath(request.target),
        password=read_password(password_file),
        subpath=request.subpath,
        includes=request.includes,
        excludes=request.excludes,
        overwrite=request.overwrite,
        verify=request.verify,
        numeric_owner=request.numeric_owner,
    )

    def follow(event: dict[str, Any]) -> None:
        if event["message_type"] in ("status", "summary"):
            with stats.lock:
                for counter in COUNTERS:
                    setattr(stats, counter, int(event.get(counter, getattr(stats, counter))))

    summary = finished_run(client, run, follow)
    with stats.lock:
        stats.errors = [(e["path"], e["reason"]) for e in summary.get("errors", [])]
        stats.warnings = [(w["path"], w["reason"]) for w in summary.get("warnings", [])]
        stats.kept = [(k["path"], k["reason"]) for k in summary.get("kept_paths", [])]
    return summary["snapshot_id"]
