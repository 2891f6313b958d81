"""A restore cancelled through its Cancellation, as the daemon's `DELETE /v1/runs/ID` cancels one:
it stops within a file or a pack range, with its own threads and with worker processes, raises
JobCancelledError, and leaves in the target only whole files under their names, no temporary one,
no descriptor and no worker."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shadowvault.archive.restore import Restorer, RestoreStats
from shadowvault.cancellation import Cancellation
from shadowvault.errors import JobCancelledError
from shadowvault.repo.repository import Repository
from tests.archive.helpers import PASSWORD, archive, big_and_many, child_processes, new_repo, whole_files

BIG_MIB = 256  # one file of many chunks: its blobs come in many pack ranges
MANY = 4000  # files of one blob each: made whole by the workers, or written by content batches
SMALL = 64 << 10


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Repository, Path, bytes]]:
    """A repository holding `big/f` (random: nothing deduplicates) and `many/` of one snapshot tree;
    the repository, the source and the tree."""
    base = tmp_path_factory.mktemp("cancel")
    src = base / "src"
    big_and_many(src, BIG_MIB, MANY, SMALL)
    with new_repo(base / "repo") as repo:
        root, _ = archive(repo, src)
    with Repository.open(base / "repo", PASSWORD) as repo:
        yield repo, src, root


def restore_cancelled(
    repo: Repository,
    root: bytes,
    subpath: Path,
    target: Path,
    processes: int,
    when: Callable[[RestoreStats], bool],
) -> RestoreStats:
    """Restore `subpath` into `target`, cancelled from another thread as soon as `when` says so (as a
    user watching its progress would); the restore must end cancelled."""
    stats = RestoreStats(cancellation=Cancellation())
    ended = threading.Event()

    def cancel_when_due() -> None:
        while not when(stats) and not ended.is_set():
            time.sleep(0.001)
        assert stats.cancellation is not None
        stats.cancellation.cancel("cancelled by the test")

    watcher = threading.Thread(target=cancel_when_due)
    watcher.start()
    try:
        with pytest.raises(JobCancelledError, match="cancelled by the test"):
            Restorer(repo, target, processes=processes, verify=True, stats=stats).restore(root, str(subpath))
    finally:
        ended.set()
        watcher.join()
    held = [os.readlink(fd) for fd in Path("/proc/self/fd").iterdir() if _points_into(fd, target)]
    assert held == [], "the restore keeps descriptors of the target open"
    assert child_processes(os.getpid(), b"archive.restore_worker") == set(), "a worker outlives the restore"
    return stats


def _points_into(fd: Path, target: Path) -> bool:
    try:
        return os.readlink(fd).startswith(f"{target}/")
    except OSError:
        return False  # closed meanwhile


@pytest.mark.parametrize("processes", [0, 2], ids=["threads", "workers"])
def test_a_large_file_is_not_finished_once_its_restore_is_cancelled(backed_up, tmp_path, processes):
    repo, src, root = backed_up
    target = tmp_path / "out"
    restore_cancelled(repo, root, src / "big", target, processes, lambda s: s.bytes_written > 0)
    assert list(target.iterdir()) == [], "the file cut short is not left under its name, nor a temporary one"


@pytest.mark.parametrize("processes", [0, 2], ids=["threads", "workers"])
def test_a_directory_restore_cancelled_midway_leaves_only_whole_files(backed_up, tmp_path, processes):
    repo, src, root = backed_up
    target = tmp_path / "out"
    stats = restore_cancelled(repo, root, src / "many", target, processes, lambda s: s.files > 0)
    whole = whole_files(target, src / "many")
    assert whole >= stats.files > 0
    assert whole < MANY, "the restore stopped before its end"


def test_a_restore_cancelled_before_it_starts_lays_nothing_down(backed_up, tmp_path):
    repo, src, root = backed_up
    stats = RestoreStats(cancellation=Cancellation())
    assert stats.cancellation is not None
    stats.cancellation.cancel()
    with pytest.raises(JobCancelledError):
        Restorer(repo, tmp_path / "out", stats=stats).restore(root, str(src))
    assert list((tmp_path / "out").iterdir()) == []
