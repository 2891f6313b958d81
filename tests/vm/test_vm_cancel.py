"""A VM backup cancelled through the daemon while QEMU copies: the copy job is cancelled, the
temporary node and new bitmap are gone, the VM runs on, the base bitmap still serves the next
incremental backup, and the repository holds no new snapshot and passes `check`.

A real daemon and a real QEMU (`-machine none`, tests/fixtures/bare_qemu.py); the copy is throttled
(`copy_speed`) so that the cancel comes while the job runs, seen as a user would see it: the copy's
file growing; the run ends long before the copy could have (BOUND), so it was the cancel that ended it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.client import Client
from shadowvault.service.runs import FINISHED
from tests.fixtures.bare_qemu import BareVM, bare_vm
from tests.service.daemon import running_daemon
from tests.service.run_waits import BOUND, assert_cancelled, ended
from tests.vm.helpers import PASSWORD, declare, hmp_io, leftovers, new_repository, qmp

CHANGED = 32 << 20  # bytes the guest changes before the cancelled backup
SLOW = 128 << 10  # bytes per second: QEMU's copy of CHANGED would take 256 s, more than BOUND
UNDER_WAY = 1 << 20  # bytes of the copy's file when the cancel comes


@pytest.fixture
def vm(private_dirs: Path) -> Iterator[BareVM]:
    with bare_vm() as machine:
        declare(private_dirs / "config", "bare", machine.qmp_socket)
        yield machine


def _copies(state: Path) -> list[Path]:
    return list((state / "vm-copies").glob("*/*.qcow2"))


def _children(pid: int) -> list[str]:
    return [c for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]


def test_a_vm_backup_cancelled_mid_copy_cancels_the_job_and_leaves_qemu_and_the_repository_clean(
    vm: BareVM, private_dirs: Path, tmp_path: Path, cli
) -> None:
    repo = tmp_path / "repo"
    new_repository(repo).close()
    state = private_dirs / "state"
    with running_daemon() as daemon, Client(daemon.socket) as client:
        full = ended(client, client.start_vm_backup(str(repo), {"vm": "bare"}, password=PASSWORD)["id"])
        assert full["state"] == "succeeded", full
        base_bitmaps = leftovers(vm.qmp_socket)["bitmaps"]
        assert len(base_bitmaps) == 1

        hmp_io(vm.qmp_socket, "drive0", f"write -P 0x5a 0 {CHANGED}")
        run = client.start_vm_backup(str(repo), {"vm": "bare", "copy_speed": SLOW}, password=PASSWORD)
        deadline = time.monotonic() + BOUND
        while not any(p.stat().st_size > UNDER_WAY for p in _copies(state)):  # QEMU is copying
            assert client.run(run["id"])["state"] not in FINISHED, client.run(run["id"])["error"]
            assert time.monotonic() < deadline, "the copy never got under way"
            time.sleep(0.1)
        assert client.cancel_run(run["id"])["state"] == "cancelling"
        assert_cancelled(ended(client, run["id"]))
        assert _children(daemon.process.pid) == [], "no process of the run is left"
        assert qmp(vm.qmp_socket, "query-status")["status"] == "running", "never paused"
        assert leftovers(vm.qmp_socket) == {"jobs": [], "nodes": [], "bitmaps": base_bitmaps}
        assert _copies(state) == [], "the temporary copy was removed"

        again = ended(client, client.start_vm_backup(str(repo), {"vm": "bare"}, password=PASSWORD)["id"])
        assert again["state"] == "succeeded", again
        assert again["result"]["parent"] == full["result"]["snapshot_id"], "still incremental from the base"
    env = {"SHADOWVAULT_PASSWORD": PASSWORD, "SHADOWVAULT_NO_DAEMON": "1"}
    snapshots = json.loads(cli("snapshots", "--repo", repo, "--json", env=env).stdout)
    assert len(snapshots) == 2, "the cancelled backup saved no snapshot"
    checked = cli("check", "--repo", repo, env=env)
    assert checked.returncode == 0, checked.stderr
