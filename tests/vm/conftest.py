"""VM tests reach only their own guests: other QEMU guests on this machine (other tests') are not ours.

`pair` is a bare QEMU (no guest) with two qcow2 disks, drive0 and drive1, of 4 MiB each, written
through the monitor, for the tests of `--vm-disk` backups and the restores of them."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shadowvault.repo.repository import Repository
from tests.fixtures.bare_qemu import BareVM, bare_vm
from tests.vm.helpers import declare, hmp_io, new_repository


@pytest.fixture(autouse=True)
def vms_from_vms_d_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHADOWVAULT_VM_SCAN", "0")


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    """A new repository in the test's directory, closed after it."""
    repository = new_repository(tmp_path / "repo")
    try:
        yield repository
    finally:
        repository.close()


@dataclass
class Pair:
    vm: BareVM
    images: dict[str, Path]  # drive -> its qcow2
    where: Path

    def write(self, drive: str, pattern: int, offset: str, length: str) -> None:
        hmp_io(self.vm.qmp_socket, drive, f"write -P {pattern:#x} {offset} {length}")

    def as_now(self, name: str) -> dict[str, Path]:
        """Raw copies of both images as they are now (what a backup taken now must restore)."""
        copies = {}
        for drive, image in self.images.items():
            hmp_io(self.vm.qmp_socket, drive, "flush")  # QEMU's qcow2 metadata reaches the file
            copies[drive] = self.where / f"{name}-{drive}.raw"
            subprocess.run(
                ["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(image), str(copies[drive])],
                check=True,
            )
        return copies


@pytest.fixture
def pair(tmp_path: Path, private_dirs: Path) -> Iterator[Pair]:
    drive1 = tmp_path / "drive1.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(drive1), "4M"], check=True)
    drives = [f"if=none,id=drive1,node-name=disk1,file={drive1},format=qcow2"]
    with bare_vm(size="4M", name="pair", drives=drives) as vm:
        declare(private_dirs / "config", "pair", vm.qmp_socket)
        yield Pair(vm, {"drive0": vm.disk, "drive1": drive1}, tmp_path)
