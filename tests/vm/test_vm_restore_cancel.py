"""A VM restore into a directory cancelled through the daemon while it writes a disk: it stops between
two chunks, and leaves no part of the disk, under its name or its temporary one, and no process.

A real daemon, a real QEMU (`-machine none`, tests/fixtures/bare_qemu.py) backed up through it, and
a restore into a loop ext4 filesystem. To make the cancel land midway, whatever the machine's speed,
the test freezes that filesystem once the disk's temporary file holds some data: the restore waits
in its write of a chunk; the cancel comes; the filesystem thaws; the write ends and the restore
stops before the next chunk. The run ends long before BOUND, so it was the cancel that ended it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shadowvault.client import Client
from shadowvault.service.runs import FINISHED
from tests.fixtures.bare_qemu import BareVM, bare_vm
from tests.fixtures.loopfs import LoopFs, frozen, loop_filesystem
from tests.service.daemon import running_daemon
from tests.service.run_waits import BOUND, assert_cancelled, ended
from tests.vm.helpers import PASSWORD, declare, hmp_io, new_repository
from tests.vm.test_vm_cancel import _children

DISK_MIB = 128
UNDER_WAY = 1 << 20  # bytes of the disk written when the cancel comes


@pytest.fixture
def vm(private_dirs: Path) -> Iterator[BareVM]:
    with bare_vm(f"{DISK_MIB}M") as machine:
        declare(private_dirs / "config", "bare", machine.qmp_socket)
        for mib in range(0, DISK_MIB, 4):  # a pattern of its own every 4 MiB: many different chunks
            hmp_io(machine.qmp_socket, "drive0", f"write -P {mib // 4 + 1} {mib}M 4M")
        yield machine


def _written(target: Path) -> int:
    """Bytes on disk of the raw image before its qcow2 conversion (made full-size and sparse, then
    filled; `.drive0.qcow2.UNIQUE.sv-restore.raw`), 0 if it is not there."""
    try:
        return sum(p.stat().st_blocks * 512 for p in target.glob(".drive0.qcow2.*.sv-restore.raw"))
    except FileNotFoundError:
        return 0


@pytest.fixture
def ext4() -> Iterator[LoopFs]:
    """Room for the disk's raw copy and its qcow2 at once (the restore checks that before writing)."""
    with loop_filesystem("ext4", size=(2 * DISK_MIB + 64) << 20) as fs:
        yield fs


def test_a_vm_restore_cancelled_between_chunks_leaves_no_part_of_a_disk(
    vm: BareVM, ext4: LoopFs, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    new_repository(repo).close()
    target = ext4.mount / "restored"
    with running_daemon() as daemon, Client(daemon.socket) as client:
        backup = ended(client, client.start_vm_backup(str(repo), {"vm": "bare"}, password=PASSWORD)["id"])
        assert backup["state"] == "succeeded", backup
        order: dict[str, Any] = {
            "snapshot": backup["result"]["snapshot_id"],
            "vm": "bare",
            "target": str(target),
        }
        run = client.start_vm_restore(str(repo), order, password=PASSWORD)
        deadline = time.monotonic() + BOUND
        while _written(target) <= UNDER_WAY:
            assert client.run(run["id"])["state"] not in FINISHED, client.run(run["id"])
            assert time.monotonic() < deadline, "the disk was never being written"
            time.sleep(0.002)
        with frozen(ext4.mount):
            assert client.run(run["id"])["state"] == "running"
            assert _written(target) < DISK_MIB << 20, "frozen while the disk is written"
            assert client.cancel_run(run["id"])["state"] == "cancelling"
        assert_cancelled(ended(client, run["id"]))
        assert _children(daemon.process.pid) == [], "no qemu-img or other process of the run is left"
    assert list(target.iterdir()) == [], "no disk under its name or a temporary one, no definition"
