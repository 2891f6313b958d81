"""kill -9 at any point leaves a repository check passes and the next backup reuses; prune runs
alongside real backup processes without breaking any snapshot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shadowvault.repo.check import check
from shadowvault.repo.format import BlobType
from shadowvault.repo.prune import prune
from shadowvault.repo.repository import Repository
from tests.repo import writer_process
from tests.repo.helpers import PASSWORD, env_for, restore_all

WRITER = str(Path(writer_process.__file__))


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, WRITER, *args], stdout=subprocess.PIPE, text=True)


def _wait_for_lines(proc: subprocess.Popen[str], count: int) -> list[str]:
    lines = []
    while len(lines) < count:
        line = proc.stdout.readline()
        assert line, f"writer exited early with {proc.wait()}"
        lines.append(line.strip())
    return lines


def test_kill_9_during_saves_then_check_passes_and_data_is_reused(tmp_path):
    path = tmp_path / "repo"
    Repository.init(path, PASSWORD, pack_size=64 << 10).close()
    for lines_before_kill in (3, 9, 14):  # kill at different points: mid-pack, after snapshots, ...
        proc = _start(str(path), "save-loop")
        _wait_for_lines(proc, lines_before_kill)
        time.sleep(0.01 * lines_before_kill)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with Repository.open(path, PASSWORD) as repo:
            report = check(repo, read_data_fraction=1.0)
            assert report.ok, report.errors
            snapshots = repo.list_snapshots()
            for sid, _ in snapshots:
                restore_all(repo, sid)
            indexed = sum(1 for n in range(400) if repo.has_blob(repo.blob_id(writer_process.blob(n))))
    assert snapshots and indexed >= 20
    # The next session deduplicates against everything the killed ones indexed.
    with Repository.open(path, PASSWORD, write=True) as repo:
        for n in range(indexed):
            repo.save_blob(BlobType.DATA, writer_process.blob(n))
        assert repo.stats.blobs_added < indexed
        reused = repo.stats.blobs_deduplicated
    assert reused >= 20
    # Leftovers (unindexed packs, temp files, dead sessions) are harmless and prune removes them.
    with Repository.open(path, PASSWORD, write=True, kind="prune") as repo:
        result = prune(repo)
        assert result.packs_pending == 0  # the killed writers' sessions are recognised as dead
    assert os.listdir(path / "tmp") == []
    assert os.listdir(path / "sessions") == []  # the killed writers' session files went too
    with Repository.open(path, PASSWORD) as repo:
        report = check(repo, read_data_fraction=1.0)
        assert report.ok and report.unindexed_packs == 0
        for sid, _ in repo.list_snapshots():
            restore_all(repo, sid)


def test_prune_while_backups_run(tmp_path, cli):
    path = tmp_path / "repo"
    Repository.init(path, PASSWORD, pack_size=128 << 10).close()
    writer = _start(str(path), "backups", "12")
    rounds = pending_rounds = 0
    try:
        while writer.poll() is None:
            with Repository.open(path, PASSWORD) as repo:
                snapshots = repo.list_snapshots()
                for sid, snap in snapshots:  # every snapshot that exists restores, at every moment
                    i = int(snap.tags[0].split("=")[1])
                    assert restore_all(repo, sid) == {**writer_process.backup_files(i), "sub/inner": b"inner"}
                for sid, _ in snapshots[:-1]:
                    repo.remove_snapshot(sid)  # forget all but the newest: recycled data becomes garbage
            with Repository.open(path, PASSWORD, write=True, kind="prune") as repo:
                pending_rounds += prune(repo).packs_pending > 0
            rounds += 1
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait()
    assert writer.returncode == 0
    assert rounds >= 3 and pending_rounds >= 1  # prune did meet a running backup and waited for it
    result = cli("prune", "--json", env=env_for(path))  # no backup runs now: pending packs go
    assert result.returncode == 0, result.stderr
    with Repository.open(path, PASSWORD) as repo:
        report = check(repo, read_data_fraction=1.0)
        assert report.ok, report.errors
        assert report.pending_packs == 0 and report.unindexed_packs == 0
        for sid, snap in repo.list_snapshots():
            i = int(snap.tags[0].split("=")[1])
            assert restore_all(repo, sid) == {**writer_process.backup_files(i), "sub/inner": b"inner"}
