"""Which disks of a running QEMU a VM backup takes (issue 13), seen as a user sees them.

The VM is a bare QEMU (no guest) with two qcow2 files (`drive0`, `drive1`), a network disk QEMU
opens itself (`net0`: NBD, from a `qemu-nbd` started here on a Unix socket) and a host block device
passed through (`pass0`: a loop device of a file made here). The host can capture only the files:
the other two are listed with why, left out of every backup with one warning each and noted in
the snapshot, and `--vm-disk` chooses among the files only.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shadowvault.repo.repository import Repository
from shadowvault.shadow import manifest as manifest_doc
from shadowvault.vm import layout
from tests.fixtures.bare_qemu import BareVM, bare_vm, loop_device, nbd_export
from tests.vm.helpers import PASSWORD, assert_same_image, cli, declare, hmp_io, leftovers, new_repository

NETWORK_WHY = "a network disk QEMU opens itself (nbd)"
PASSTHROUGH_WHY = "a host block device passed through"


@dataclass
class MixedVM:
    vm: BareVM
    drive1: Path  # the second file disk's image
    repo: Path


@pytest.fixture
def mixed(tmp_path: Path, private_dirs: Path) -> Iterator[MixedVM]:
    drive1, exported, passed = tmp_path / "drive1.qcow2", tmp_path / "net.raw", tmp_path / "pass.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(drive1), "8M"], check=True)
    for image in (exported, passed):
        image.write_bytes(b"\x99" * (4 << 20))
    with contextlib.ExitStack() as stack:  # unwound in reverse: QEMU stops before its disks go
        sock = stack.enter_context(nbd_export(exported))
        device = stack.enter_context(loop_device(passed))
        drives = [
            f"if=none,id=drive1,node-name=disk1,file={drive1},format=qcow2",
            f"if=none,id=net0,file=nbd+unix:///?socket={sock},format=raw",
            f"if=none,id=pass0,file={device},format=raw",
        ]
        vm = stack.enter_context(bare_vm(size="8M", name="mixed", drives=drives))
        declare(private_dirs / "config", "mixed", vm.qmp_socket)
        new_repository(tmp_path / "repo").close()
        yield MixedVM(vm, drive1, tmp_path / "repo")


def test_writers_list_shows_the_disks_the_host_cannot_capture_and_why(mixed: MixedVM) -> None:
    done = cli("writers", "list", "--json")
    assert done.returncode == 0, done.stderr
    [entry] = [e for e in json.loads(done.stdout) if e["writer"] == "qemu:mixed"]
    components = {c["metadata"]["disk"]: c for c in entry["components"]}
    assert sorted(components) == ["drive0", "drive1", "net0", "pass0"], entry
    for disk in ("drive0", "drive1"):
        assert components[disk]["selectable"] and "excluded" not in components[disk]["metadata"]
    for disk, why in (("net0", NETWORK_WHY), ("pass0", PASSTHROUGH_WHY)):
        assert not components[disk]["selectable"]
        assert why in components[disk]["metadata"]["excluded"]

    human = cli("writers", "list")
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    block = lines[lines.index("writer: qemu:mixed") :]
    block = block[: block.index("")]
    drive0 = next(line for line in block if "component: mixed/drive0" in line)
    assert str(mixed.vm.disk) in drive0 and "excluded" not in drive0
    net0 = next(line for line in block if "component: mixed/net0" in line)
    assert f"excluded: {NETWORK_WHY}" in net0 and "nbd+unix://" in net0
    pass0 = next(line for line in block if "component: mixed/pass0" in line)
    assert f"excluded: {PASSTHROUGH_WHY}" in pass0 and "/dev/loop" in pass0


def test_a_backup_leaves_them_out_warns_once_each_and_the_snapshot_says_so(mixed: MixedVM) -> None:
    hmp_io(mixed.vm.qmp_socket, "drive0", "write -P 0x10 0 512k")
    done = cli("vm", "backup", "mixed", repo=mixed.repo)
    assert done.returncode == 0, done.stderr  # the capturable disks are backed up: a success
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 2, done.stderr
    assert sum("disk net0 excluded" in w and NETWORK_WHY in w for w in warnings) == 1
    assert sum("disk pass0 excluded" in w and PASSTHROUGH_WHY in w for w in warnings) == 1
    assert "disk drive0: full" in done.stderr and "disk drive1: full" in done.stderr

    with Repository.open(mixed.repo, PASSWORD) as repo:
        [(snapshot_id, snapshot)] = repo.list_snapshots()
        definition, nodes = layout.read_vm(repo.load_tree, repo.load_blob, snapshot.tree, "mixed")
        assert sorted(nodes) == ["drive0", "drive1"]
        assert [d.disk for d in definition.disks] == ["drive0", "drive1"]
        assert NETWORK_WHY in definition.excluded["net0"]
        assert PASSTHROUGH_WHY in definition.excluded["pass0"]
        assert snapshot.components == ["mixed/drive0", "mixed/drive1"]
        assert snapshot.manifest is not None
        manifest = manifest_doc.decode(repo.load_blob(snapshot.manifest))
    graded = {c.name: c for c in manifest.components()}
    assert graded["mixed/drive0"].consistency == "crash"
    for disk, why in (("net0", NETWORK_WHY), ("pass0", PASSTHROUGH_WHY)):
        component = graded[f"mixed/{disk}"]
        assert component.consistency == "none" and "not backed up" in component.reason
        assert why in component.reason
        assert any(f"disk {disk} excluded" in note and why in note for note in manifest.notes)
    shown = cli("snapshots", "--json", repo=mixed.repo)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)[0]["components"] == ["mixed/drive0", "mixed/drive1"]
    assert snapshot_id.startswith(json.loads(shown.stdout)[0]["short_id"])
    # a disk the host could not capture is in no snapshot: a restore of it says why, in one line
    refused = cli(
        "vm", "restore", "latest", "mixed", "--disk", "net0", "--target", "/nonexistent", repo=mixed.repo
    )
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith(
        f"shadowvault: error: disk net0 of VM mixed was never backed up: {NETWORK_WHY}"
    )
    assert len(refused.stderr.splitlines()) == 1, refused.stderr


def test_vm_disk_backs_up_only_the_disk_chosen(mixed: MixedVM, tmp_path: Path) -> None:
    hmp_io(mixed.vm.qmp_socket, "drive0", "write -P 0x20 0 1M")
    hmp_io(mixed.vm.qmp_socket, "drive1", "write -P 0x21 1M 1M")
    done = cli("vm", "backup", "mixed", "--vm-disk", "drive1", "--json", repo=mixed.repo)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert list(summary["disks"]) == ["drive1"] and summary["warnings"] == []
    assert "excluded" not in done.stderr  # the excluded disks were not asked for

    # the whole VM cannot come back (no snapshot holds drive0): the disk it holds can
    whole = cli("vm", "restore", "latest", "mixed", "--target", str(tmp_path / "r"), repo=mixed.repo)
    assert whole.returncode == 1 and "restore the disks it holds with --disk drive1" in whole.stderr
    restored = cli(
        "vm",
        "restore",
        "latest",
        "mixed",
        "--disk",
        "drive1",
        "--target",
        str(tmp_path / "r"),
        "--format",
        "raw",
        repo=mixed.repo,
    )
    assert restored.returncode == 0, restored.stderr
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["drive1.raw", "mixed.json", "mixed.sh"]
    hmp_io(mixed.vm.qmp_socket, "drive1", "flush")
    assert_same_image(tmp_path / "r" / "drive1.raw", mixed.drive1)
    with open(tmp_path / "r" / "drive1.raw", "rb") as f:
        f.seek(1 << 20)
        assert f.read(4096) == b"\x21" * 4096
    assert leftovers(mixed.vm.qmp_socket)["nodes"] == []


@pytest.mark.parametrize(("disk", "why"), [("net0", NETWORK_WHY), ("pass0", PASSTHROUGH_WHY)])
def test_vm_disk_naming_an_excluded_disk_is_one_clear_line(mixed: MixedVM, disk: str, why: str) -> None:
    for argv in (["--vm-disk", disk], ["--vm-disk", "drive0", "--vm-disk", disk]):
        done = cli("vm", "backup", "mixed", *argv, repo=mixed.repo)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr
        refusal = f"shadowvault: error: disk {disk} of VM mixed cannot be backed up: {why}"
        assert done.stderr.startswith(refusal), done.stderr
        assert done.stderr.endswith(" (disks it can back up: drive0, drive1)\n"), done.stderr
    assert leftovers(mixed.vm.qmp_socket) == {"jobs": [], "nodes": [], "bitmaps": []}
    with Repository.open(mixed.repo, PASSWORD) as repo:
        assert repo.list_snapshots() == []
