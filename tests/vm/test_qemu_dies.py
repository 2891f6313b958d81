"""A VM whose QEMU dies while `vm backup` copies it (issue 13).

QEMU killed (SIGKILL) mid-copy: the backup fails in one line naming the VM, exit 1, no traceback;
the repository passes `check` and holds no snapshot of that backup; nothing of the copy is left in
the state directory; and once the VM runs again the next backup works and is a full copy (the base
bitmap QEMU had loaded comes back inconsistent: an incremental built on it could miss writes), which
restores as the image is.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.bare_qemu import BareVM, bare_vm
from tests.vm.helpers import (
    PASSWORD,
    PROJECT,
    assert_same_image,
    cli,
    declare,
    hmp_io,
    leftovers,
    new_repository,
)

MIB = 1024 * 1024


@pytest.fixture
def vm(private_dirs: Path) -> Iterator[BareVM]:
    with bare_vm(size="16M", name="bare") as machine:
        declare(private_dirs / "config", "bare", machine.qmp_socket)
        yield machine


def _copies() -> list[Path]:
    """The copies under way (seen without taking the monitor from the requester)."""
    return list(Path(os.environ["SHADOWVAULT_STATE_DIR"], "vm-copies").glob("*/*.qcow2"))


def _backup_killing_qemu(vm: BareVM, repo: Path, how: signal.Signals) -> subprocess.CompletedProcess[str]:
    """`vm backup bare` (the copy slowed to 1 MiB/s), QEMU sent `how` once its copy job writes."""
    env = dict(os.environ, SHADOWVAULT_PASSWORD=PASSWORD, SHADOWVAULT_VM_SCAN="0", SHADOWVAULT_NO_DAEMON="1")
    argv = [sys.executable, "-m", "shadowvault.cli.launch", "vm", "backup", "bare", "--repo", str(repo)]
    requester = subprocess.Popen(
        [*argv, "--copy-speed", str(MIB)],
        env=env,
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: requester.poll() is None and requester.kill())
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size > MIB for p in _copies() if p.exists()):
            assert requester.poll() is None, requester.communicate()
            assert time.monotonic() < deadline, "the copy job never started"
            time.sleep(0.1)
        vm.process.send_signal(how)
        vm.process.wait(timeout=30)
        out, err = requester.communicate(timeout=120)
    return subprocess.CompletedProcess(requester.args, requester.returncode, out, err)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "terminated"])
def test_qemu_exiting_mid_copy_fails_the_backup_in_one_line_and_the_next_one_misses_nothing(
    vm: BareVM, tmp_path: Path, how: signal.Signals
) -> None:
    repo = tmp_path / "repo"
    new_repository(repo).close()
    hmp_io(vm.qmp_socket, "drive0", "write -P 0x21 0 16M")
    first = cli("vm", "backup", "bare", "--json", repo=repo)
    assert first.returncode == 0, first.stderr
    vm.quit()  # the bitmap is stored in the image, and loaded again: killing QEMU now leaves it in use
    vm.restart()
    hmp_io(vm.qmp_socket, "drive0", "write -P 0x43 0 16M")

    done = _backup_killing_qemu(vm, repo, how)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "VM bare: its QEMU exited while its disks were copied" in done.stderr, done.stderr
    assert _copies() == []
    listed = cli("snapshots", "--json", repo=repo)
    assert listed.returncode == 0, listed.stderr
    assert [s["id"] for s in json.loads(listed.stdout)] == [json.loads(first.stdout)["snapshot_id"]]
    checked = cli("check", repo=repo)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    vm.restart()
    hmp_io(vm.qmp_socket, "drive0", "write -P 0x65 4M 64k")
    again = cli("vm", "backup", "bare", "--json", repo=repo)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    # killed: the base bitmap QEMU had loaded comes back inconsistent, so everything is read again;
    # terminated: QEMU stored it, and it marks every chunk written since the first backup
    assert summary["parent"] == json.loads(first.stdout)["snapshot_id"], summary
    assert summary["disks"]["drive0"]["bytes_read"] == 16 * MIB, summary
    restored = cli(
        "vm",
        "restore",
        summary["snapshot_id"],
        "bare",
        "--target",
        str(tmp_path / "r"),
        "--format",
        "raw",
        repo=repo,
    )
    assert restored.returncode == 0, restored.stderr
    hmp_io(vm.qmp_socket, "drive0", "flush")
    assert_same_image(tmp_path / "r" / "drive0.raw", vm.disk)
    assert leftovers(vm.qmp_socket)["jobs"] == [] and leftovers(vm.qmp_socket)["nodes"] == []
