"""The jobs as the daemon will call them: typed requests in, typed results out, no command line between.

A backup of a tree on a real ext4 volume read live (provider none), then the restore jobs on it:
files (bytes and modes back), component (the files component's plan, a dry run changes nothing),
writer (a snapshot without a shadow set has no manifest to restore writers from: one clear error).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shadowvault.components.base import RestoreOptions
from shadowvault.errors import NotFoundError
from shadowvault.jobs.backup import BackupRequest, run_backup
from shadowvault.jobs.backup_components import ComponentSelection, staged_components
from shadowvault.jobs.restore_component import ComponentRestoreRequest, run_component_restore
from shadowvault.jobs.restore_files import FilesRestoreRequest, run_files_restore
from shadowvault.jobs.restore_writer import WriterRestoreRequest, run_writer_restore
from tests.archive.helpers import new_repo


@pytest.fixture
def backed_up(ext4, tmp_path):
    src = ext4.mount / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_bytes(b"alpha\n")
    (src / "run.sh").write_bytes(b"#!/bin/sh\n")
    (src / "run.sh").chmod(0o750)
    repo = new_repo(tmp_path / "repo")
    result = run_backup(repo, BackupRequest(paths=[str(src)], provider="none", tags=["job"]))
    yield repo, src, result
    repo.close()


def test_backup_job_result_is_the_saved_snapshot(backed_up) -> None:
    repo, src, result = backed_up
    snapshot_id, snapshot = repo.find_snapshot("latest")
    assert snapshot_id == result.snapshot_id
    assert snapshot.paths == [str(src)] and snapshot.tags == ["job"]
    assert result.stats.files_new == 2 and not result.errors
    assert snapshot.consistency == {"files": "none"}  # read live: no shadow set


def test_files_restore_job_lays_the_tree_down(backed_up, tmp_path: Path) -> None:
    repo, src, result = backed_up
    target = tmp_path / "restored"
    done = run_files_restore(repo, FilesRestoreRequest(snapshot=result.snapshot_id[:8], target=str(target)))
    assert done.snapshot_id == result.snapshot_id and not done.errors
    below = target / str(src).lstrip("/")
    assert (below / "sub" / "a.txt").read_bytes() == b"alpha\n"
    assert (below / "run.sh").stat().st_mode & 0o777 == 0o750


def test_files_restore_job_of_a_subpath(backed_up, tmp_path: Path) -> None:
    repo, src, _ = backed_up
    target = tmp_path / "sub-only"
    request = FilesRestoreRequest(snapshot="latest", target=str(target), subpath=str(src / "sub"))
    run_files_restore(repo, request)
    assert sorted(os.listdir(target)) == ["a.txt"]


def test_component_restore_job_dry_run_plans_and_changes_nothing(backed_up, tmp_path: Path) -> None:
    repo, _, result = backed_up
    root = tmp_path / "machine"
    root.mkdir()
    options = RestoreOptions(target_root=root, dry_run=True)
    done = run_component_restore(repo, ComponentRestoreRequest("latest", "files", options))
    assert done.snapshot_id == result.snapshot_id and not done.applied
    assert done.plan.lines(), "the plan says what would be created"
    assert os.listdir(root) == []


def test_writer_restore_job_needs_a_manifest(backed_up) -> None:
    repo, _, _ = backed_up
    with pytest.raises(NotFoundError, match="no backup manifest"):
        run_writer_restore(repo, WriterRestoreRequest(snapshot="latest", dry_run=True))


def test_component_staging_is_removed_after_the_backup_request(tmp_path: Path) -> None:
    root = tmp_path / "machine"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("box\n")
    base = BackupRequest(paths=[], tags=["t"])
    selection = ComponentSelection(["files"], root)
    selection.options.paths = ["/etc"]
    with staged_components(base, selection) as request:
        assert request.components == ["files"] and request.tags == ["t"]
        assert request.paths == ["/etc"] and request.source_root == str(root)
        staging = Path(request.extra_sources[0][1]).parent
        assert staging.is_dir()
    assert not staging.exists()
