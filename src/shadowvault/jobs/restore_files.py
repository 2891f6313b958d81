"""The files restore job: a snapshot (or a subtree of it) laid down in a directory, with its metadata.

Without a subpath the snapshot's full paths are recreated below the target; with one, what is inside
the subpath is restored into the target. A damaged blob fails only the files that need it: the
errors are in the result, the rest is restored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from shadowvault.archive.patterns import PathFilter
from shadowvault.archive.restore import Overwrite, Restorer, RestoreStats
from shadowvault.repo.repository import Repository


@dataclass
class FilesRestoreRequest:
    """What to restore from which snapshot, into which directory, and how."""

    snapshot: str  # a snapshot ref: an id, a unique prefix or "latest"
    target: str
    subpath: str = "/"
    includes: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    iincludes: list[str] = field(default_factory=list)  # matched ignoring case (restic's --iinclude)
    iexcludes: list[str] = field(default_factory=list)
    overwrite: str = Overwrite.NEVER.value
    verify: bool = False  # read every restored file back and compare its hash
    numeric_owner: bool = False


@dataclass
class FilesRestoreResult:
    snapshot_id: str
    stats: RestoreStats
    duration: float

    @property
    def errors(self) -> list[tuple[bytes, str]]:
        """(snapshot path, reason) of what could not be restored."""
        return self.stats.errors


def run_files_restore(
    repo: Repository, request: FilesRestoreRequest, *, stats: RestoreStats | None = None
) -> FilesRestoreResult:
    """Restore `request.subpath` of the snapshot into `request.target`; `stats` shows the progress."""
    started = time.monotonic()
    snapshot_id, snapshot = repo.find_snapshot(request.snapshot)
    stats = stats or RestoreStats()
    restorer = Restorer(
        repo,
        request.target,
        path_filter=PathFilter(
            request.includes, request.excludes, iincludes=request.iincludes, iexcludes=request.iexcludes
        ),
        overwrite=request.overwrite,
        verify=request.verify,
        numeric_owner=request.numeric_owner,
        stats=stats,
    )
    restorer.restore(snapshot.tree, request.subpath)
    return FilesRestoreResult(snapshot_id, stats, time.monotonic() - started)
