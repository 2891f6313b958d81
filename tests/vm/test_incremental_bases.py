"""Which snapshot each disk's incremental copy builds on (issue 13), with a bare QEMU and two disks.

Each disk builds on the last snapshot that holds it, with the bitmap started for that snapshot:
backups that choose disks (`--vm-disk`) in turn stay incremental. Each repository keeps its own
bitmaps: two repositories backing up the same VM stay incremental each, up to a bound of
repositories per disk past which the one that backed it up least recently loses its bitmaps (its
next copy is a full one). A disk whose size changed since its base is copied in full. Writes come
from the monitor, so the chunks that changed are known; every snapshot is restored and compared
with the images as they were when it was taken.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.jobs.backup_vm import VmBackupRequest, VmBackupResult, run_vm_backup
from shadowvault.jobs.restore_vm import VmRestoreRequest, run_vm_restore
from shadowvault.repo.repository import Repository
from shadowvault.vm import bitmaps
from tests.vm.conftest import Pair
from tests.vm.helpers import leftovers, new_repository, qmp

CHUNK = 256 * 1024
DISKS = ("drive0", "drive1")


@pytest.fixture
def repos(tmp_path: Path) -> Iterator[list[Repository]]:
    opened = [new_repository(tmp_path / f"repo{n}") for n in range(3)]
    try:
        yield opened
    finally:
        for repo in opened:
            repo.close()


def _backup(repo: Repository, *disks: str) -> VmBackupResult:
    warnings: list[str] = []
    result = run_vm_backup(repo, VmBackupRequest(vm="pair", disks=list(disks)), on_warning=warnings.append)
    assert warnings == []
    return result


def _read(result: VmBackupResult) -> dict[str, int]:
    """Chunks read per disk of a backup whose every copy was incremental."""
    assert all(d.incremental for d in result.definition.disks), result.definition.disks
    return {disk: stats.chunks_read for disk, stats in result.images.items()}


def _restores_as(repo: Repository, result: VmBackupResult, expected: dict[str, Path], where: Path) -> None:
    """The disks `result` holds, restored with --disk each (a whole-VM restore of a snapshot that
    holds some disks takes the others from earlier ones: tests/vm/test_partial_vm_restore.py)."""
    held = [d.disk for d in result.definition.disks]
    request = VmRestoreRequest(
        snapshot=result.snapshot_id, vm="pair", target=str(where), disks=held, format="raw"
    )
    restored = run_vm_restore(repo, request).disks
    assert sorted(restored) == sorted(held)
    for disk, image in restored.items():
        compare = subprocess.run(
            ["qemu-img", "compare", "-f", "raw", "-F", "raw", image, str(expected[disk])],
            capture_output=True,
            text=True,
            check=False,
        )
        assert compare.returncode == 0, f"{disk}: {compare.stdout}{compare.stderr}"


def _bitmaps(result: VmBackupResult) -> list[str]:
    return [d.bitmap for d in result.definition.disks]


def test_alternating_disk_selections_stay_incremental_per_disk(
    pair: Pair, repos: list[Repository], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = repos[0]
    caplog.set_level(logging.WARNING)
    pair.write("drive0", 0x11, "0", "1M")
    pair.write("drive1", 0x12, "0", "1M")
    both = _backup(repo)
    at_both = pair.as_now("both")

    pair.write("drive0", 0x21, "1M", "4k")  # chunk 4
    pair.write("drive1", 0x22, "2M", "300k")  # chunks 8 and 9
    one = _backup(repo, "drive1")
    at_one = pair.as_now("one")
    assert _read(one) == {"drive1": 2} and one.parent == both.snapshot_id

    pair.write("drive0", 0x31, "3M", "64k")  # chunk 12
    pair.write("drive1", 0x32, "512k", "4k")  # chunk 2
    again = _backup(repo)
    at_again = pair.as_now("again")
    # drive0 builds on the first snapshot, the last one holding it: chunks 4 and 12 changed since
    assert _read(again) == {"drive0": 2, "drive1": 1} and again.parent == one.snapshot_id
    assert again.images["drive0"].bytes_read <= 2 * CHUNK
    assert not [r.getMessage() for r in caplog.records if "earlier backup left" in r.getMessage()]
    assert leftovers(pair.vm.qmp_socket)["bitmaps"] == sorted(_bitmaps(again))

    for name, result, expected in (("both", both, at_both), ("one", one, at_one), ("again", again, at_again)):
        _restores_as(repo, result, expected, tmp_path / f"r-{name}")

    # a full copy of one disk keeps the other's base: drive1 still builds on `again`
    pair.write("drive1", 0x33, "1M", "4k")  # chunk 4
    full = run_vm_backup(repo, VmBackupRequest(vm="pair", disks=["drive0"], full=True))
    assert [d.incremental for d in full.definition.disks] == [False] and full.parent is None
    last = _backup(repo)
    assert _read(last) == {"drive0": 0, "drive1": 1}
    _restores_as(repo, last, pair.as_now("last"), tmp_path / "r-last")
    assert not [r.getMessage() for r in caplog.records if "earlier backup left" in r.getMessage()]


def test_two_repositories_backing_up_the_same_vm_keep_their_own_bitmaps(
    pair: Pair, repos: list[Repository], tmp_path: Path
) -> None:
    first, second = repos[0], repos[1]
    pair.write("drive0", 0x41, "0", "1M")
    _backup(first)
    b_full = _backup(second)
    assert not any(d.incremental for d in b_full.definition.disks)

    pair.write("drive0", 0x42, "1M", "4k")  # chunk 4
    a_inc = _backup(first)
    at_a = pair.as_now("a")
    assert _read(a_inc) == {"drive0": 1, "drive1": 0}
    pair.write("drive1", 0x43, "2M", "4k")  # chunk 8
    b_inc = _backup(second)
    at_b = pair.as_now("b")
    assert _read(b_inc) == {"drive0": 1, "drive1": 1}  # every change since its own last backup
    assert leftovers(pair.vm.qmp_socket)["bitmaps"] == sorted(_bitmaps(a_inc) + _bitmaps(b_inc))
    _restores_as(first, a_inc, at_a, tmp_path / "ra")
    _restores_as(second, b_inc, at_b, tmp_path / "rb")


def test_past_the_bound_the_repository_that_backed_up_least_recently_gets_a_full_copy(
    pair: Pair, repos: list[Repository], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bitmaps, "MAX_OWNERS", 2)
    pair.write("drive0", 0x51, "0", "1M")
    for repo in repos:  # the third drops the first one's bitmaps
        _backup(repo)
        time.sleep(1.1)  # set ids (what says which repository backed up last) count in seconds
    assert len(leftovers(pair.vm.qmp_socket)["bitmaps"]) == 2 * len(DISKS)
    pair.write("drive0", 0x52, "1M", "4k")
    dropped = _backup(repos[0])
    assert not any(d.incremental for d in dropped.definition.disks)  # its bitmaps were gone: read again
    _restores_as(repos[0], dropped, pair.as_now("dropped"), tmp_path / "r0")
    kept = _backup(repos[2])  # the most recent one kept its own (and the first dropped the second's)
    assert _read(kept) == {"drive0": 1, "drive1": 0}


def test_a_disk_grown_since_its_base_gets_a_full_copy(
    pair: Pair, repos: list[Repository], tmp_path: Path
) -> None:
    pair.write("drive0", 0x61, "0", "1M")
    _backup(repos[0])
    qmp(pair.vm.qmp_socket, "block_resize", {"node-name": "disk0", "size": 6 << 20})
    pair.write("drive0", 0x62, "5M", "4k")
    grown = _backup(repos[0])
    assert [(d.disk, d.incremental) for d in grown.definition.disks] == [("drive0", False), ("drive1", True)]
    assert grown.definition.disks[0].virtual_size == 6 << 20
    _restores_as(repos[0], grown, pair.as_now("grown"), tmp_path / "r")
