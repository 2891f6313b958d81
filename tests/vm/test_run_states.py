"""VM backups in QEMU's other run states (query-status), with the tiny guest and a bare QEMU.

A guest that runs no code writes nothing: paused (`stop`) or never started (`-S`, prelaunch), it is
backed up crash-consistent, its disks as when it stopped, without asking its guest agent (which
cannot answer) and with a warning saying so; `--on-agent-failure abort` refuses it in one line.
The backup neither resumes nor starts it. A QEMU waiting for an incoming migration is refused in
one line naming the state, and nothing is left in QEMU or in the repository.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.repo.repository import Repository
from tests.fixtures.bare_qemu import running_qemu
from tests.fixtures.tiny_vm import TinyVM, tiny_vm
from tests.vm.helpers import (
    PASSWORD,
    assert_acknowledged_records,
    cli,
    declare,
    leftovers,
    new_repository,
    qmp,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(600)]

PAUSED_WARNING = (
    "VM still is paused: the copy is crash-consistent, the disks as they were when the guest stopped; "
    "its guest agent cannot answer while the guest does not run"
)


@pytest.fixture(scope="module")
def guest() -> Iterator[TinyVM]:
    with tiny_vm(workload=True, name="still") as vm:
        vm.wait_for_ack(3)
        yield vm


@pytest.fixture
def still(guest: TinyVM, private_dirs: Path) -> TinyVM:
    declare(private_dirs / "config", "still", guest.qmp_socket, guest.agent_socket)
    return guest


def test_a_paused_guest_is_backed_up_crash_consistent_without_asking_its_agent(
    still: TinyVM, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    new_repository(repo).close()
    qmp(still.qmp_socket, "stop")
    try:
        acked = still.acked()  # durable before the pause: every one must be in the copy
        listed = cli("vm", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        [row] = [r for r in json.loads(listed.stdout) if r["vm"] == "still"]
        assert (row["status"], row["agent"]) == ("paused", "guest not running")
        human = cli("vm", "list")
        assert "vm: still (paused, not running)" in human.stdout

        refused = cli("vm", "backup", "still", "--on-agent-failure", "abort", repo=repo)
        assert refused.returncode == 1 and refused.stdout == "", refused.stderr
        assert refused.stderr == (
            "shadowvault: error: VM still is paused: its guest agent cannot freeze a guest that does not "
            "run (--on-agent-failure abort)\n"
        )

        done = cli("vm", "backup", "still", "--json", repo=repo)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert (summary["consistency"], summary["status"]) == ("crash", "paused")
        assert summary["warnings"] == [PAUSED_WARNING]
        again = cli("vm", "backup", "still", repo=repo)  # incremental, as the human reads it
        assert again.returncode == 0, again.stderr
        assert again.stderr.splitlines()[0] == f"shadowvault: warning: {PAUSED_WARNING}"
        assert "disk vda: incremental, read 0 B of 64.0 MiB" in again.stderr  # a paused guest writes nothing
        assert "consistency: crash; freeze window " in again.stderr
        assert again.stderr.endswith("; the VM was not running (QEMU status paused)\n")
        assert qmp(still.qmp_socket, "query-status")["status"] == "paused"  # not resumed by the backup
    finally:
        qmp(still.qmp_socket, "cont")
    still.wait_for_ack(acked + 3)  # it writes on

    target = tmp_path / "r"
    restored = cli(
        "vm",
        "restore",
        summary["snapshot_id"],
        "still",
        "--target",
        str(target),
        "--format",
        "raw",
        repo=repo,
    )
    assert restored.returncode == 0, restored.stderr
    image = str(target / "vda.raw")
    # crash-consistent: the journal is replayed as after a power cut, then the filesystem is clean
    fsck = subprocess.run(["e2fsck", "-fy", image], capture_output=True, text=True, timeout=120, check=False)
    assert fsck.returncode in (0, 1), fsck.stdout
    assert_acknowledged_records(image, acked)
    definition = json.loads((target / "still.json").read_text())
    assert definition["status"] == "paused"  # and crash-consistent (the default, not written)
    assert definition.get("consistency", "crash") == "crash"

    running = cli("vm", "backup", "still", "--json", repo=repo)  # running again: frozen by its agent
    assert running.returncode == 0, running.stderr
    assert json.loads(running.stdout)["consistency"] == "application"
    assert json.loads(running.stdout)["status"] == "running"


def test_a_guest_started_with_S_is_backed_up_before_it_ever_ran(private_dirs: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    new_repository(repo).close()
    with tiny_vm(workload=False, name="early", start_stopped=True) as vm:
        declare(private_dirs / "config", "early", vm.qmp_socket, vm.agent_socket)
        assert qmp(vm.qmp_socket, "query-status")["status"] == "prelaunch"
        done = cli("vm", "backup", "early", repo=repo)
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines()[0] == (
            "shadowvault: warning: VM early is not started yet (QEMU was started with -S): the copy is "
            "crash-consistent, the disks as they were when the guest stopped; its guest agent cannot "
            "answer while the guest does not run"
        )
        assert done.stderr.endswith("; the VM was not running (QEMU status prelaunch)\n")
        assert qmp(vm.qmp_socket, "query-status")["status"] == "prelaunch"  # not started by the backup
        restored = cli("vm", "restore", "latest", "early", "--target", str(tmp_path / "r"), repo=repo)
        assert restored.returncode == 0, restored.stderr
        compare = subprocess.run(
            ["qemu-img", "compare", "-U", str(tmp_path / "r" / "vda.qcow2"), str(vm.directory / "vda.qcow2")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert compare.returncode == 0, compare.stdout + compare.stderr
        assert leftovers(vm.qmp_socket)["nodes"] == []


def test_a_qemu_waiting_for_a_migration_is_refused_naming_its_state(
    private_dirs: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    repo = tmp_path / "repo"
    new_repository(repo).close()
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "4M"], check=True)
    short = Path(tempfile.mkdtemp(prefix="sv-mig-"))  # a socket path is at most 107 bytes
    request.addfinalizer(lambda: shutil.rmtree(short, ignore_errors=True))
    monitor = short / "qmp.sock"
    argv = ["qemu-system-x86_64", "-name", "incoming", "-accel", "tcg", "-machine", "none", "-nodefaults"]
    argv += ["-display", "none", "-drive", f"if=none,id=drive0,file={disk},format=qcow2"]
    argv += ["-incoming", "defer", "-qmp", f"unix:{monitor},server=on,wait=off"]
    with running_qemu(argv, monitor):
        declare(private_dirs / "config", "incoming", monitor)
        assert qmp(monitor, "query-status")["status"] == "inmigrate"
        refused = cli("vm", "backup", "incoming", repo=repo)
        assert refused.returncode == 1 and refused.stdout == "", refused.stderr
        assert refused.stderr == (
            "shadowvault: error: VM incoming cannot be backed up now: it is waiting for or receiving an "
            "incoming migration (QEMU status inmigrate); back it up once it runs or is paused\n"
        )
        assert leftovers(monitor) == {"jobs": [], "nodes": [], "bitmaps": []}
    with Repository.open(repo, PASSWORD) as opened:
        assert opened.list_snapshots() == []
