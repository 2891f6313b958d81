"""Backups, restores and jobs.d jobs as runs of the daemon: started, followed, cancelled, recorded.

Real daemons, real repositories, real btrfs loop filesystems; the snapshots are restored and the
repository checked as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shadowvault.archive.restore import Restorer
from shadowvault.client import Client
from shadowvault.errors import NotFoundError, UsageError
from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.fixtures.unprivileged import run_as_nobody
from tests.jobs.test_scheduled import define, setup  # noqa: F401  (setup is a fixture)
from tests.service.daemon import running_daemon


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    Repository.init(path, PASSWORD, kdf_params=FAST_KDF).close()
    return path


def _slow_writer(private_dirs: Path, tmp_path: Path) -> Path:
    """A writers.d script writer whose freeze holds until the returned file exists (at most a
    minute): a run is running while it freezes, however loaded the machine."""
    release = tmp_path / "release"
    hold = tmp_path / "hold.sh"
    hold.write_text(
        f'#!/bin/sh\ni=0\nwhile [ ! -e "{release}" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n'
    )
    hold.chmod(0o700)
    config = private_dirs / "config" / "writers.d" / "slow.toml"
    config.write_text(f'freeze = ["{hold}"]\nthaw = ["/bin/true"]\n')
    config.chmod(0o600)
    return release


def _tree(root: Path) -> None:
    (root / "docs").mkdir()
    (root / "docs" / "a.txt").write_text("alpha\n")
    (root / "docs" / "b.bin").write_bytes(os.urandom(200_000))
    (root / "secret").write_bytes(b"s3cret")
    (root / "secret").chmod(0o600)


def test_a_backup_and_a_restore_run_in_the_daemon_with_their_events(btrfs, repo, tmp_path):
    _tree(btrfs.mount)
    with running_daemon() as daemon, Client(daemon.socket) as client:
        run = client.start_backup(
            str(repo), [str(btrfs.mount / "docs"), str(btrfs.mount / "secret")], password=PASSWORD
        )
        assert run["kind"] == "backup" and run["state"] in ("queued", "running")
        events = list(client.events(run["id"]))
        types = [e["message_type"] for e in events]
        assert types[0] == "queued" and "started" in types and types[-1] == "summary", types
        assert all(e["run_id"] == run["id"] for e in events)
        summary = events[-1]
        assert summary["exit_status"] == 0 and summary["files_new"] == 3
        assert summary["consistency"] == {"files": "crash"}  # read through a btrfs shadow the daemon made
        report = client.run(run["id"])
        assert report["state"] == "succeeded" and report["result"]["snapshot_id"] == summary["snapshot_id"]
        assert client.shadow_sets() == []  # the backup's set was released

        target = tmp_path / "restored"
        restore = client.start_restore(str(repo), summary["snapshot_id"], str(target), password=PASSWORD)
        done = client.wait(restore["id"])
        assert done["state"] == "succeeded", done
        assert done["result"]["files"] == 3 and done["result"]["errors"] == []
        restored = target / str(btrfs.mount).lstrip("/")
        assert (restored / "docs" / "a.txt").read_text() == "alpha\n"
        assert (restored / "docs" / "b.bin").read_bytes() == (btrfs.mount / "docs" / "b.bin").read_bytes()
        assert stat.S_IMODE((restored / "secret").stat().st_mode) == 0o600
        assert [r["id"] for r in client.runs()] == [run["id"], restore["id"]]


def test_a_backup_run_takes_the_backup_commands_exclude_options(btrfs, repo, tmp_path):
    """exclude_caches and exclude_larger_than (bytes) in POST /v1/backups, as the command's flags."""
    _tree(btrfs.mount)
    cache = btrfs.mount / "docs" / "cache"
    cache.mkdir()
    (cache / "CACHEDIR.TAG").write_bytes(b"Signature: 8a477f597d28d172789f06886806bc55\n")
    (cache / "blob").write_bytes(b"cached\n")
    fields = {"password": PASSWORD, "exclude_caches": True, "exclude_larger_than": 100_000}
    with running_daemon() as daemon, Client(daemon.socket) as client:
        done = client.wait(client.start_backup(str(repo), [str(btrfs.mount / "docs")], **fields)["id"])
        assert done["state"] == "succeeded", done
        with pytest.raises(UsageError, match="exclude_larger_than"):
            client.start_backup(str(repo), ["/srv"], password=PASSWORD, exclude_larger_than=0)
    target = tmp_path / "restored"
    with Repository.open(repo, PASSWORD) as opened:
        Restorer(opened, str(target)).restore(opened.find_snapshot("latest")[1].tree, "/")
    docs = target / str(btrfs.mount / "docs").lstrip("/")
    assert sorted(p.name for p in docs.rglob("*")) == ["CACHEDIR.TAG", "a.txt", "cache"]


def test_a_backup_run_takes_the_restic_options_and_a_restore_run_iincludes(btrfs, repo, tmp_path):
    """exclude_if_present, iexcludes, time and with_atime in POST /v1/backups, as the command's
    flags; iincludes in POST /v1/restores, as restore --iinclude."""
    _tree(btrfs.mount)
    docs = btrfs.mount / "docs"
    (docs / "tagged").mkdir()
    (docs / "tagged" / ".nobackup").write_text("")
    (docs / "tagged" / "data").write_text("left out\n")
    (docs / "B.BIN").write_text("left out\n")
    fields = {
        "password": PASSWORD,
        "exclude_if_present": [".nobackup"],
        "iexcludes": ["*.bin"],
        "time": "2019-01-02 03:04:05",
        "with_atime": True,
    }
    with running_daemon() as daemon, Client(daemon.socket) as client:
        done = client.wait(client.start_backup(str(repo), [str(docs)], **fields)["id"])
        assert done["state"] == "succeeded", done
        assert done["result"]["skipped"] == {"if_present": 1, "excluded": 2}
        with pytest.raises(UsageError, match="exclude_if_present takes a file name"):
            client.start_backup(str(repo), ["/srv"], password=PASSWORD, exclude_if_present=[":HDR"])
        with pytest.raises(UsageError, match="time takes a local time like"):
            client.start_backup(str(repo), ["/srv"], password=PASSWORD, time="2019-01-02")
        target = tmp_path / "restored"
        run = client.start_restore(str(repo), "latest", str(target), password=PASSWORD, iincludes=["*.TXT"])
        assert client.wait(run["id"])["state"] == "succeeded"
    with Repository.open(repo, PASSWORD) as opened:
        assert opened.find_snapshot("latest")[1].time == time.mktime((2019, 1, 2, 3, 4, 5, 0, 0, -1))
    got = target / str(docs).lstrip("/")
    assert [str(p.relative_to(got)) for p in got.rglob("*") if p.is_file()] == ["a.txt"]


def test_a_run_s_bad_input_is_a_clear_error(repo):
    with running_daemon() as daemon, Client(daemon.socket) as client:
        with pytest.raises(UsageError, match="unknown field `pasword`"):
            client.start_backup(str(repo), ["/srv"], pasword=PASSWORD)
        with pytest.raises(UsageError, match="Invalid enum value 'sometimes'"):
            client.start_restore(str(repo), "latest", "/tmp/x", password=PASSWORD, overwrite="sometimes")
        failed = client.wait(client.start_backup(str(repo), ["/srv"], password="wrong")["id"])
        assert failed["state"] == "failed" and failed["error_kind"] == "WrongPasswordError", failed
        with pytest.raises(NotFoundError, match="no run 123"):
            client.run("123")


def test_a_cancelled_backup_unwinds_leaves_a_valid_repository_and_no_set(
    btrfs, repo, private_dirs, tmp_path, cli
):
    _tree(btrfs.mount)
    release = _slow_writer(private_dirs, tmp_path)
    with running_daemon() as daemon, Client(daemon.socket) as client:
        run = client.start_backup(str(repo), [str(btrfs.mount / "docs")], password=PASSWORD)
        for event in client.events(run["id"]):
            if event["message_type"] == "started":
                client_2 = Client(daemon.socket)
                assert client_2.cancel_run(run["id"])["id"] == run["id"]  # while the writer freezes
                client_2.close()
                release.touch()
        report = client.run(run["id"])
        assert report["state"] == "cancelled" and report["error_kind"] == "JobCancelledError", report
        assert report["exit_status"] == 130
        assert client.shadow_sets() == []
    env = {"SHADOWVAULT_PASSWORD": PASSWORD}
    assert json.loads(cli("snapshots", "--repo", repo, "--json", env=env).stdout) == []
    checked = cli("check", "--repo", repo, env=env)
    assert checked.returncode == 0, checked.stderr


def test_a_job_runs_in_the_daemon_is_recorded_and_in_the_metrics(cli, setup, private_dirs, nobody_pythonpath):  # noqa: F811
    define(setup, "home", 'schedule = "daily"\npaths = ["{src}"]\nprovider = "none"\n')
    define(setup, "other", 'schedule = "daily"\npaths = ["{src}"]\nprovider = "none"\n')
    config = private_dirs / "config" / "shadowvault.toml"
    config.write_text(
        config.read_text() + '\n[api]\nrequester_group = "nogroup"\nrequester_jobs = ["home"]\n'
    )
    with running_daemon(public=True) as daemon, Client(daemon.socket) as client:
        names = [j["name"] for j in client.jobs()]
        assert names == ["home", "other"]
        env = {"SHADOWVAULT_SOCKET": str(daemon.socket)}
        through_daemon = cli("jobs", "run", "home", env=env)
        assert through_daemon.returncode == 0, through_daemon.stderr
        assert [r["description"] for r in client.runs()] == ["job home"]  # it ran in the daemon
        in_process = cli("--no-daemon", "jobs", "run", "home", env=env)
        assert in_process.returncode == 0, in_process.stderr
        assert len(client.runs()) == 1
        after = cli("jobs", "run", "home", "--no-daemon", env=env)  # as docs/jobs.md writes it
        assert after.returncode == 0, after.stderr
        assert len(client.runs()) == 1
        # the same table (its column widths follow the values, which differ from one run to the next)
        header = through_daemon.stdout.splitlines()[0].split()
        assert header == in_process.stdout.splitlines()[0].split()
        jobs = {j["name"]: j for j in client.jobs()}
        assert jobs["home"]["last_run"]["status"] == "success"
        home = private_dirs / "state" / "jobs" / "home.json"  # a record left by a job since removed:
        (home.parent / "gone.json").write_text(json.dumps({**json.loads(home.read_text()), "job": "gone"}))
        families = {f.name: f for f in text_string_to_metric_families(client.metrics())}
        success = families["shadowvault_job_last_success_timestamp_seconds"]
        assert any(s.labels["job"] == "home" and s.value > 0 for s in success.samples)
        assert "gone" not in {s.labels["job"] for s in success.samples}
        runs = {s.labels["state"]: s.value for s in families["shadowvault_daemon_runs"].samples}
        assert runs["succeeded"] == 1

        member = (
            "import json\nfrom shadowvault.client import Client\n"
            "from shadowvault.errors import ShadowvaultError\n"
            "out = {}\n"
            "with Client() as sv:\n"
            "    out['home'] = sv.wait(sv.start_job('home')['id'])['state']\n"
            "    for name, call in (('other', lambda: sv.start_job('other')),\n"
            "                       ('backup', lambda: sv.start_backup('/r', ['/x'], password='p'))):\n"
            "        try:\n"
            "            call()\n"
            "        except ShadowvaultError as err:\n"
            "            out[name] = str(err)\n"
            "    out['runs'] = [r['description'] for r in sv.runs()]\n"
            "print(json.dumps(out))\n"
        )
        done = run_as_nobody(nobody_pythonpath, "-c", member, env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {
            "home": "succeeded",
            "other": "uid 65534 may not run the job other: [api] requester_jobs does not allow it",
            "backup": "uid 65534 may not run a backup: only root may",
            "runs": ["job home"],  # their own run, not root's
        }


def test_a_member_sees_the_result_of_the_job_it_ran(cli, setup, private_dirs, nobody_pythonpath):  # noqa: F811
    """The records are root's: a member reads them through the daemon; without it, one line says so."""
    define(setup, "home", 'schedule = "daily"\npaths = ["{src}"]\nprovider = "none"\n')
    config = private_dirs / "config" / "shadowvault.toml"
    config.write_text(
        config.read_text() + '\n[api]\nrequester_group = "nogroup"\nrequester_jobs = ["home"]\n'
    )
    with running_daemon(public=True) as daemon:
        env = {
            "SHADOWVAULT_SOCKET": str(daemon.socket),
            "SHADOWVAULT_CONFIG_DIR": str(private_dirs / "config"),
            "SHADOWVAULT_STATE_DIR": str(private_dirs / "state"),
        }

        def as_member(*args: str) -> subprocess.CompletedProcess[str]:
            return run_as_nobody(nobody_pythonpath, "-m", "shadowvault.cli.launch", *args, env=env)

        ran = as_member("jobs", "run", "home", "--json")
        assert ran.returncode == 0, ran.stderr
        one = as_member("jobs", "status", "home", "--json")
        assert one.returncode == 0, one.stderr
        assert json.loads(one.stdout) == json.loads(ran.stdout)
        assert json.loads(one.stdout) == json.loads(cli("jobs", "status", "home", "--json", env=env).stdout)
        every = as_member("jobs", "status", "--json")
        assert every.returncode == 0, every.stderr
        assert json.loads(every.stdout) == json.loads(cli("jobs", "status", "--json", env=env).stdout)
        table = as_member("jobs", "status")
        assert table.returncode == 0, table.stderr
        assert table.stdout.split()[:8] == [
            "Job",
            "Finished",
            "Status",
            "Exit",
            "Snapshot",
            "Added",
            "Took",
            "Consistency",
        ]
        assert "home" in table.stdout and "success" in table.stdout
        never = as_member("jobs", "status", "other")
        assert (never.returncode, never.stderr.count("\n")) == (1, 1), never.stderr
        assert "job other has not run yet" in never.stderr
        for args, message in (
            (
                ("jobs", "status"),
                f"jobs status needs root or the daemon: {private_dirs / 'state' / 'jobs'} is root's",
            ),
            (("jobs", "run", "home"), "jobs run needs root or the daemon: job home runs as root"),
        ):
            alone = as_member("--no-daemon", *args)
            assert alone.returncode == 1
            assert alone.stderr.splitlines() == [
                f"shadowvault: error: {message} (as a member of its requester group, run it without "
                "--no-daemon while `shadowvault daemon` answers)"
            ]


def test_a_cli_stopped_while_the_daemon_runs_its_job_cancels_the_run(btrfs, setup, private_dirs, tmp_path):  # noqa: F811
    release = _slow_writer(private_dirs, tmp_path)
    (btrfs.mount / "data").mkdir()
    (btrfs.mount / "data" / "f").write_text("x\n")
    define(setup, "slow", f'schedule = "daily"\npaths = ["{btrfs.mount / "data"}"]\n')
    with running_daemon() as daemon, Client(daemon.socket) as client:
        env = {**os.environ, "SHADOWVAULT_SOCKET": str(daemon.socket)}
        command = [sys.executable, "-m", "shadowvault.cli.launch", "jobs", "run", "slow"]
        requester = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 60
        while not any(r["state"] == "running" for r in client.runs()):
            assert time.monotonic() < deadline and requester.poll() is None, requester.communicate()
            time.sleep(0.1)
        requester.send_signal(signal.SIGTERM)
        _, err = requester.communicate(timeout=60)
        release.touch()  # the cancel is in: the writer may finish its freeze
        assert requester.returncode == 143, err
        run = client.runs()[0]
        report = client.wait(run["id"])
        assert report["state"] == "cancelled", report
        assert client.shadow_sets() == []


HEAP_PROBE = """
import time
from shadowvault.archive.memory import heap_bounded
from shadowvault.service.runs import FINISHED, Runs
before = heap_bounded()
run = Runs().start("probe", 0, "nothing", lambda run, follow: ({}, 0))
deadline = time.monotonic() + 60
while run.state not in FINISHED and time.monotonic() < deadline:
    time.sleep(0.01)
print(before, run.state, heap_bounded())
"""


def test_a_run_bounds_the_daemons_heap_as_a_cli_command_does():
    """glibc keeps freed chunk buffers in its heaps unless bounded (archive/memory.py): the CLI bounds
    them per command, the daemon, which never exits to give them back, with its first run."""
    done = subprocess.run([sys.executable, "-c", HEAP_PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "succeeded", "True"]
