"""The dirty bitmap a VM backup leaves in QEMU, across restarts of QEMU (issue 13).

The bitmap is persistent: a clean stop (QMP `quit`) stores it in the qcow2 and QEMU loads it when
it starts again, so the next backup is still incremental and reads only what changed. A QEMU killed
(SIGKILL) stores nothing: a bitmap made since it started is gone, one it had loaded stays marked in
use in the image and comes back inconsistent. Either way the next backup must not trust it: a full
copy, and the restored disk equals the image.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.jobs.backup_vm import VmBackupRequest, VmBackupResult, run_vm_backup
from shadowvault.jobs.restore_vm import VmRestoreRequest, run_vm_restore
from shadowvault.repo.repository import Repository
from tests.fixtures.bare_qemu import BareVM, bare_vm
from tests.vm.helpers import declare, hmp_io, leftovers, qmp

CHUNK = 256 * 1024
SIZE = 16 * 1024 * 1024


@pytest.fixture
def vm(private_dirs: Path) -> Iterator[BareVM]:
    with bare_vm(size="16M", name="bare") as machine:
        declare(private_dirs / "config", "bare", machine.qmp_socket)
        yield machine


def _stored_bitmaps(image: Path) -> dict[str, list[str]]:
    """The bitmaps the qcow2 file holds (name -> flags: `auto`, `in-use`), as `qemu-img info` reads them."""
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(image)], capture_output=True, check=True
        ).stdout
    )
    bitmaps = info.get("format-specific", {}).get("data", {}).get("bitmaps", [])
    return {b["name"]: b["flags"] for b in bitmaps}


def _inconsistent(vm: BareVM) -> list[str]:
    nodes = qmp(vm.qmp_socket, "query-named-block-nodes", {"flat": True})
    return [b["name"] for n in nodes for b in n.get("dirty-bitmaps", []) if b.get("inconsistent")]


def _restores_as_the_image(repo: Repository, vm: BareVM, result: VmBackupResult, where: Path) -> None:
    request = VmRestoreRequest(snapshot=result.snapshot_id, vm="bare", target=str(where), format="raw")
    image = run_vm_restore(repo, request).disks["drive0"]
    hmp_io(vm.qmp_socket, "drive0", "flush")  # QEMU's qcow2 metadata reaches the file
    compare = subprocess.run(
        ["qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2", image, str(vm.disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compare.returncode == 0, compare.stdout + compare.stderr


def test_the_bitmap_survives_a_clean_restart_and_the_next_backup_reads_only_the_changes(
    vm: BareVM, repo: Repository, tmp_path: Path
) -> None:
    hmp_io(vm.qmp_socket, "drive0", "write -P 0x22 0 2M")
    full = run_vm_backup(repo, VmBackupRequest(vm="bare"))
    bitmap = full.definition.disks[0].bitmap
    vm.quit()
    assert list(_stored_bitmaps(vm.disk)) == [bitmap]  # in the image, not in use
    assert "in-use" not in _stored_bitmaps(vm.disk)[bitmap]

    vm.restart()
    assert leftovers(vm.qmp_socket)["bitmaps"] == [bitmap] and _inconsistent(vm) == []
    for io in ("write -P 0x33 1M 4k", "write -P 0x44 9M 300k"):  # three chunks: one, then two
        hmp_io(vm.qmp_socket, "drive0", io)
    incremental = run_vm_backup(repo, VmBackupRequest(vm="bare"))
    stats = incremental.images["drive0"]
    assert incremental.parent == full.snapshot_id and incremental.definition.disks[0].incremental
    assert stats.chunks == SIZE // CHUNK
    assert stats.chunks_read == 3 and stats.chunks_reused == stats.chunks - 3
    assert 4096 + 300 * 1024 <= stats.bytes_read <= 3 * CHUNK
    _restores_as_the_image(repo, vm, incremental, tmp_path / "r")
    assert leftovers(vm.qmp_socket)["bitmaps"] == [incremental.definition.disks[0].bitmap]


def test_after_qemu_is_killed_the_next_backup_trusts_no_bitmap_and_misses_nothing(
    vm: BareVM, repo: Repository, tmp_path: Path
) -> None:
    hmp_io(vm.qmp_socket, "drive0", "write -P 0x22 0 2M")
    run_vm_backup(repo, VmBackupRequest(vm="bare"))

    # killed before the bitmap was ever stored: it is gone
    hmp_io(vm.qmp_socket, "drive0", "write -P 0x55 3M 64k")
    vm.kill()
    vm.restart()
    assert leftovers(vm.qmp_socket)["bitmaps"] == []
    hmp_io(vm.qmp_socket, "drive0", "write -P 0x66 5M 64k")
    second = run_vm_backup(repo, VmBackupRequest(vm="bare"))
    assert not second.definition.disks[0].incremental
    assert second.images["drive0"].chunks_reused == 0  # everything read again
    _restores_as_the_image(repo, vm, second, tmp_path / "r2")

    # killed after it was stored and loaded again: it comes back marked inconsistent
    vm.quit()
    vm.restart()
    hmp_io(vm.qmp_socket, "drive0", "write -P 0x77 7M 64k")
    vm.kill()
    assert "in-use" in _stored_bitmaps(vm.disk)[second.definition.disks[0].bitmap]
    vm.restart()
    assert _inconsistent(vm) == [second.definition.disks[0].bitmap]
    hmp_io(vm.qmp_socket, "drive0", "write -P 0x88 11M 64k")
    third = run_vm_backup(repo, VmBackupRequest(vm="bare"))
    assert not third.definition.disks[0].incremental and third.images["drive0"].chunks_reused == 0
    _restores_as_the_image(repo, vm, third, tmp_path / "r3")
    # the inconsistent bitmap is dropped; the new one is sound and the next backup incremental again
    assert leftovers(vm.qmp_socket)["bitmaps"] == [third.definition.disks[0].bitmap]
    assert _inconsistent(vm) == []
    hmp_io(vm.qmp_socket, "drive0", "write -P 0x99 13M 4k")
    fourth = run_vm_backup(repo, VmBackupRequest(vm="bare"))
    assert fourth.definition.disks[0].incremental and fourth.images["drive0"].chunks_read == 1
    _restores_as_the_image(repo, vm, fourth, tmp_path / "r4")
