"""A VM whose disk is a qcow2 overlay on a qcow2 base (issue 13): data in both layers.

`writers list` shows the chain; a backup stores the guest's view of the disk (both layers merged), so
a restored image has no backing file and equals the overlay as QEMU reads it; an incremental after
writes into the overlay reads only the changed chunks and restores whole as well.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.bare_qemu import BareVM, bare_vm
from tests.vm.helpers import cli, declare, hmp_io, new_repository, qmp

CHUNK = 256 * 1024


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """The lower layer: 1 MiB at 0 and 512 KiB at 4 MiB of a 16 MiB disk."""
    image = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    io = ["-c", "write -P 0x11 0 1M", "-c", "write -P 0x12 4M 512k"]
    subprocess.run(["qemu-io", "-f", "qcow2", *io, str(image)], check=True, capture_output=True)
    return image


@pytest.fixture
def layered(base: Path, tmp_path: Path, private_dirs: Path) -> Iterator[BareVM]:
    with bare_vm(name="layered", backing=base) as vm:
        declare(private_dirs / "config", "layered", vm.qmp_socket)
        new_repository(tmp_path / "repo").close()
        yield vm


def _same_as_the_guest_sees(vm: BareVM, restored: Path) -> None:
    hmp_io(vm.qmp_socket, "drive0", "flush")  # QEMU's qcow2 metadata reaches the file
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(restored)], capture_output=True, check=True
        ).stdout
    )
    assert info["format"] == "qcow2" and "backing-filename" not in info  # whole, no chain
    compare = subprocess.run(
        ["qemu-img", "compare", "-U", str(restored), str(vm.disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compare.returncode == 0, compare.stdout + compare.stderr


def _backup(repo: Path) -> dict[str, dict[str, object]]:
    done = cli("vm", "backup", "layered", "--json", repo=repo)
    assert done.returncode == 0, done.stderr
    disks: dict[str, dict[str, object]] = json.loads(done.stdout)["disks"]
    return disks


def _restore(repo: Path, target: Path) -> Path:
    done = cli("vm", "restore", "latest", "layered", "--target", str(target), repo=repo)
    assert done.returncode == 0, done.stderr
    return target / "drive0.qcow2"


def test_an_overlay_is_listed_with_its_chain_and_restores_whole(
    layered: BareVM, base: Path, tmp_path: Path
) -> None:
    listed = cli("writers", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = [e for e in json.loads(listed.stdout) if e["writer"] == "qemu:layered"]
    [disk] = [c["metadata"] for c in entry["components"]]
    assert (disk["filename"], disk["backing"]) == (str(layered.disk), [str(base)])
    human = cli("writers", "list")
    assert f"component: layered/drive0 (vm-disk): {layered.disk} <- {base}" in human.stdout, human.stdout

    # the overlay covers part of the base's first MiB and adds data of its own
    hmp_io(layered.qmp_socket, "drive0", "write -P 0x21 512k 1M")
    hmp_io(layered.qmp_socket, "drive0", "write -P 0x22 8M 256k")
    repo = tmp_path / "repo"
    full = _backup(repo)["drive0"]
    assert not full["incremental"]
    assert full["bytes_read"] == 1536 * 1024 + 512 * 1024 + 256 * 1024  # both layers, no zeros
    restored = _restore(repo, tmp_path / "r1")
    _same_as_the_guest_sees(layered, restored)
    raw = subprocess.run(
        ["qemu-img", "convert", "-O", "raw", str(restored), str(tmp_path / "r1.raw")], check=True
    )
    assert raw.returncode == 0
    with open(tmp_path / "r1.raw", "rb") as f:
        for offset, byte in ((0, 0x11), (512 * 1024, 0x21), (4 << 20, 0x12), (8 << 20, 0x22)):
            f.seek(offset)
            assert f.read(4096) == bytes([byte]) * 4096, hex(offset)

    # an incremental after writes into the overlay, over base data and over its own
    hmp_io(layered.qmp_socket, "drive0", "write -P 0x31 4M 64k")
    hmp_io(layered.qmp_socket, "drive0", "write -P 0x32 8M 4k")
    incremental = _backup(repo)["drive0"]
    assert incremental["incremental"] and 64 * 1024 + 4096 <= int(incremental["bytes_read"]) <= 2 * CHUNK
    _same_as_the_guest_sees(layered, _restore(repo, tmp_path / "r2"))


def test_an_overlay_whose_base_the_command_line_names_is_still_a_disk_of_the_vm(
    base: Path, tmp_path: Path, private_dirs: Path
) -> None:
    """The base moved and QEMU is told where it is now (`backing.file.filename=`): QEMU then names the
    overlay `json:{...}`. It is still a local image, listed, backed up and restored as its file."""
    moved, top = tmp_path / "moved-base.qcow2", tmp_path / "top.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top)], check=True
    )
    base.rename(moved)
    drive = f"if=none,id=drive1,driver=qcow2,file.filename={top}"
    drive += f",backing.driver=qcow2,backing.file.filename={moved}"
    with bare_vm(size="1M", name="moved", drives=[drive]) as vm:
        declare(private_dirs / "config", "moved", vm.qmp_socket)
        hmp_io(vm.qmp_socket, "drive1", "write -P 0x41 256k 256k")
        [name] = [
            b["inserted"]["image"]["filename"]
            for b in qmp(vm.qmp_socket, "query-block")
            if b["device"] == "drive1"
        ]
        assert name.startswith("json:")  # what QEMU calls it
        listed = cli("vm", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        [disk] = [d for d in json.loads(listed.stdout)[0]["disks"] if d["disk"] == "drive1"]
        assert (disk["filename"], disk["backing"]) == (str(top), [str(moved)])
        assert "excluded" not in disk, disk["excluded"]

        new_repository(tmp_path / "repo").close()
        done = cli("vm", "backup", "moved", "--json", repo=tmp_path / "repo")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["disks"]["drive1"]["bytes_read"] == 1536 * 1024  # both layers
        target = tmp_path / "r"
        restored = cli("vm", "restore", "latest", "moved", "--target", str(target), repo=tmp_path / "repo")
        assert restored.returncode == 0, restored.stderr
        assert "still names" not in restored.stderr
        hmp_io(vm.qmp_socket, "drive1", "flush")
        compare = subprocess.run(
            ["qemu-img", "compare", "-U", str(target / "drive1.qcow2"), name],
            capture_output=True,
            text=True,
            check=False,
        )
        assert compare.returncode == 0, compare.stdout + compare.stderr
        # the restored command line runs the restored, whole image: no backing, nothing of the original
        start = (target / "moved.sh").read_text()
        assert f"driver=qcow2,file.filename={target / 'drive1.qcow2'}" in start
        assert str(top) not in start and str(moved) not in start and "backing" not in start
