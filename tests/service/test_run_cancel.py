"""Cancelling the daemon's runs: `DELETE /v1/runs/ID`, or the command following a run being stopped.

A restore stops within a file or a pack range and leaves nothing half-written under a final name
and no temporary file; a backup stops within a few chunks of a large file, leaves a repository that
`check` passes, and no snapshot. The cancel's answer says `cancelling` until the run has unwound,
then the run is `cancelled` (exit status 130). Real daemons, real repositories; the cancel comes
once the work is seen under way, as a user would see it.
"""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shadowvault.client import Client
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.service.responses import status_for
from shadowvault.service.runs import FINISHED, Run, Runs, StoppingError
from tests.archive.helpers import (
    FAST_KDF,
    PASSWORD,
    archive,
    big_and_many,
    files_being_written,
    new_repo,
    whole_files,
)
from tests.service.daemon import Daemon, running_daemon
from tests.service.run_waits import assert_cancelled

BIG_MIB = 256  # random, so that nothing deduplicates: a file that takes a while to write or read
MANY = 2000  # files of one blob each, in one directory
SMALL = 96 << 10
UNDER_WAY = 8 << 20  # bytes of the large file written before the restore is cancelled


@dataclass
class BackedUp:
    repo: Path
    src: Path
    snapshot: str


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> BackedUp:
    """A snapshot of `src`: `big/f` and `many/` (MANY files)."""
    base = tmp_path_factory.mktemp("run-cancel")
    src = base / "src"
    big_and_many(src, BIG_MIB, MANY, SMALL)
    with new_repo(base / "repo") as repo:
        root, _ = archive(repo, src)
        snapshot = repo.save_snapshot(Snapshot(time=time.time(), host="test", paths=[str(src)], tree=root))
    return BackedUp(base / "repo", src, snapshot)


def until(seen: Callable[[], bool], run_ended: Callable[[], bool], what: str) -> None:
    """Wait until `seen` (at most a minute); fail if the run ends first."""
    deadline = time.monotonic() + 60
    while not seen():
        assert not run_ended(), f"the run ended before {what}"
        assert time.monotonic() < deadline, f"{what} was never seen"
        time.sleep(0.002)


def ended(client: Client, run: dict[str, Any]) -> Callable[[], bool]:
    return lambda: client.run(run["id"])["state"] in FINISHED


def writing_large_file(daemon: Daemon, target: Path) -> Callable[[], bool]:
    """Whether the daemon is writing a file of more than UNDER_WAY bytes into `target` (unnamed or
    under a temporary name: not finished)."""
    return lambda: any(size > UNDER_WAY for size in files_being_written(daemon.process.pid, target))


def test_a_restore_cancelled_within_a_large_file_leaves_it_out_and_a_new_restore_makes_it(
    backed_up: BackedUp, tmp_path: Path
):
    target = tmp_path / "out"
    big = str(backed_up.src / "big")
    with running_daemon() as daemon, Client(daemon.socket) as client:
        run = client.start_restore(
            str(backed_up.repo), backed_up.snapshot, str(target), password=PASSWORD, subpath=big, verify=True
        )
        until(writing_large_file(daemon, target), ended(client, run), "the file was being written")
        answer = client.cancel_run(run["id"])
        assert answer["state"] == "cancelling", answer
        assert_cancelled(client.wait(run["id"]))
        assert "cancelling" in [e["message_type"] for e in client.events(run["id"])]
        assert list(target.iterdir()) == [], "no part of the file under its name, nor a temporary file"

        again = client.start_restore(
            str(backed_up.repo), backed_up.snapshot, str(target), password=PASSWORD, subpath=big, verify=True
        )
        assert client.wait(again["id"])["state"] == "succeeded"
    assert filecmp.cmp(target / "f", backed_up.src / "big" / "f", shallow=False)


def test_a_restore_of_many_files_cancelled_midway_leaves_only_whole_files(
    backed_up: BackedUp, tmp_path: Path
):
    target = tmp_path / "out"
    with running_daemon() as daemon, Client(daemon.socket) as client:
        run = client.start_restore(
            str(backed_up.repo),
            backed_up.snapshot,
            str(target),
            password=PASSWORD,
            subpath=str(backed_up.src / "many"),
        )
        until(lambda: target.is_dir() and any(target.iterdir()), ended(client, run), "a file was restored")
        assert client.cancel_run(run["id"])["state"] == "cancelling"
        assert_cancelled(client.wait(run["id"]))
    assert whole_files(target, backed_up.src / "many") < MANY, "the restore stopped before its end"


def test_a_restore_command_stopped_cancels_its_run_in_the_daemon(backed_up: BackedUp, tmp_path: Path):
    target = tmp_path / "out"
    with running_daemon() as daemon, Client(daemon.socket) as client:
        env = {
            **os.environ,
            "SHADOWVAULT_SOCKET": str(daemon.socket),
            "SHADOWVAULT_REPOSITORY": str(backed_up.repo),
            "SHADOWVAULT_PASSWORD": PASSWORD,
        }
        snapshot = f"{backed_up.snapshot}:{backed_up.src / 'big'}"
        command = [
            sys.executable,
            "-m",
            "shadowvault.cli.launch",
            "restore",
            snapshot,
            "--target",
            str(target),
        ]
        restore = subprocess.Popen(
            [*command, "--verify"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        until(
            writing_large_file(daemon, target),
            lambda: restore.poll() is not None,
            "the daemon was writing the file",
        )
        restore.send_signal(signal.SIGTERM)
        _, err = restore.communicate(timeout=60)
        assert restore.returncode == 143, err
        assert b"terminated by SIGTERM" in err, err
        runs = client.runs()
        assert [r["kind"] for r in runs] == ["restore"], "the command's restore ran in the daemon"
        assert_cancelled(client.wait(runs[0]["id"]))
    assert list(target.iterdir()) == [], "no part of the file under its name, nor a temporary file"


def test_a_backup_cancelled_within_a_large_file_leaves_no_snapshot_and_a_valid_repository(
    backed_up: BackedUp, tmp_path: Path, cli
):
    repo = tmp_path / "repo"
    Repository.init(repo, PASSWORD, kdf_params=FAST_KDF).close()
    big = backed_up.src / "big" / "f"
    with running_daemon() as daemon, Client(daemon.socket) as client:
        run = client.start_backup(str(repo), [str(big.parent)], password=PASSWORD, provider="none")
        fds = Path(f"/proc/{daemon.process.pid}/fd")
        until(lambda: str(big) in _open_files(fds), ended(client, run), "the file was being read")
        assert client.cancel_run(run["id"])["state"] == "cancelling"
        assert_cancelled(client.wait(run["id"]))
    stored = sum(p.stat().st_size for p in (repo / "data").rglob("*") if p.is_file())
    assert stored < (BIG_MIB << 20) // 2, f"{stored} bytes stored: the file was read on after the cancel"
    env = {"SHADOWVAULT_PASSWORD": PASSWORD, "SHADOWVAULT_NO_DAEMON": "1"}
    assert json.loads(cli("snapshots", "--repo", repo, "--json", env=env).stdout) == []
    checked = cli("check", "--repo", repo, env=env)
    assert checked.returncode == 0, checked.stderr


def _open_files(fds: Path) -> set[str]:
    found = set()
    for fd in fds.iterdir():
        try:
            found.add(os.readlink(fd))
        except OSError:
            continue  # closed meanwhile
    return found


def test_a_queued_run_cancelled_ends_at_once_a_running_one_says_cancelling_until_it_stops():
    runs = Runs()
    release = threading.Event()

    def work(run: Run, follow: Callable[..., None]) -> tuple[dict[str, Any], int]:
        while not release.wait(0.01):
            run.cancellation.check()  # as a walk checks between entries
        return {"done": True}, 0

    first, second, third = (runs.start("restore", 0, f"restore {n}", work) for n in range(3))
    try:
        deadline = time.monotonic() + 60
        while first.state == "queued" or second.state == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert third.state == "queued", "two runs at a time"

        report = runs.cancel(third.id).report()
        assert (report["state"], report["exit_status"], report["error_kind"]) == (
            "cancelled",
            130,
            "JobCancelledError",
        )
        assert runs.cancel(first.id).report()["state"] == "cancelling"
        while first.state not in FINISHED:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert first.state == "cancelled"
    finally:
        release.set()  # whatever failed: the runs' threads end
        runs.wait()
    assert (second.state, second.result) == ("succeeded", {"done": True})
    assert third.started is None, "the cancelled run never started"
    assert runs.cancel(second.id).state == "succeeded", "an ended run stays as it ended"


def test_no_run_starts_once_the_daemon_is_stopping():
    """A request under way as the daemon stops (past cancel_all) starts nothing that the stop would
    then wait for to its end."""
    runs = Runs()
    runs.cancel_all("the daemon is stopping")
    with pytest.raises(StoppingError, match=r"^no backup was started: the daemon is stopping$"):
        runs.start("backup", 0, "backup of /srv", lambda run, follow: ({}, 0))
    runs.wait()
    assert runs.all() == []
    assert status_for(StoppingError("stopping")) == 503
