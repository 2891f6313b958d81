"""One disk restored from a snapshot whose backup left it out (`--vm-disk`), with the tiny guest.

The guest has two disks: vda, where it appends its records, and vdb, an ext4 made here holding one
file. After a backup of both and one of vda alone, `restore latest --vm duo --disk vdb --path P`
(and `vm restore ... --disk vdb`) takes vdb from the earlier snapshot, as a whole-VM restore does,
and says so: a warning naming both snapshots, the disk's snapshot and time in the output and in
`--json`. Where no snapshot holds vdb the restore refuses in one line naming the disks it can
restore, and writes nothing.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shadowvault.jobs.backup_vm import VmBackupRequest, VmBackupResult, run_vm_backup
from shadowvault.repo.repository import Repository
from tests.fixtures.tiny_vm import TinyVM, tiny_vm
from tests.vm.helpers import PASSWORD, cli, declare, new_repository

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(600)]

GREETING = b"vdb says hello\n" * 300


def ext4_with_file(image: Path, name: str, content: bytes) -> None:
    """A qcow2 image of a 16 MiB ext4 holding one file (mkfs.ext4 -d: no loop device, no mount)."""
    tree = image.parent / "tree"
    tree.mkdir()
    (tree / name).write_bytes(content)
    raw = image.with_suffix(".raw")
    subprocess.run(["truncate", "-s", "16M", str(raw)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(raw)], check=True)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image)], check=True)
    raw.unlink()


@dataclass
class Duo:
    vm: TinyVM
    vdb: Path  # its image, which the guest never writes


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Duo]:
    vdb = tmp_path_factory.mktemp("duo") / "vdb.qcow2"
    ext4_with_file(vdb, "greeting.txt", GREETING)
    with tiny_vm(workload=True, name="duo", more_disks={"vdb": vdb}) as vm:
        vm.wait_for_ack(3)
        yield Duo(vm, vdb)


@pytest.fixture
def duo(guest: Duo, private_dirs: Path) -> Duo:
    declare(private_dirs / "config", "duo", guest.vm.qmp_socket, guest.vm.agent_socket)
    return guest


def _backup(repo_path: Path, *disks: str) -> VmBackupResult:
    repo = Repository.open(repo_path, PASSWORD) if repo_path.exists() else new_repository(repo_path)
    try:
        result = run_vm_backup(repo, VmBackupRequest(vm="duo", disks=list(disks)))
    finally:
        repo.close()
    assert result.definition.consistency == "application", result.warnings
    return result


def test_a_disk_the_snapshot_left_out_comes_from_the_earlier_snapshot_holding_it(
    duo: Duo, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    first = _backup(repo)
    second = _backup(repo, "vda")
    assert second.definition.left_out == ["vdb"]
    old, new = first.snapshot_id[:8], second.snapshot_id[:8]

    # a file from inside vdb, on `restore --vm`: from the first snapshot, and the restore says so
    files = tmp_path / "files"
    done = cli(
        "restore",
        "latest",
        "--vm",
        "duo",
        "--disk",
        "vdb",
        "--path",
        "/greeting.txt",
        "--target",
        str(files),
        repo=repo,
    )
    assert done.returncode == 0, done.stderr
    assert (files / "greeting.txt").read_bytes() == GREETING
    assert len(done.stderr.splitlines()) == 1, done.stderr
    warning = f"snapshot {new} does not hold disk vdb of VM duo: restored from earlier snapshot {old} ("
    assert warning in done.stderr
    assert "points in time differ" not in done.stderr
    assert done.stdout == f"restored {files / 'greeting.txt'}\n"

    # the same on `vm restore`, in JSON: the disk's snapshot and time
    as_json = cli(
        "vm",
        "restore",
        "latest",
        "duo",
        "--disk",
        "vdb",
        "--path",
        "/greeting.txt",
        "--target",
        str(tmp_path / "j"),
        "--json",
        repo=repo,
    )
    assert as_json.returncode == 0, as_json.stderr
    point = json.loads(as_json.stdout)["points_in_time"]["vdb"]
    assert (point["snapshot_id"], point["earlier"]) == (first.snapshot_id, True)
    assert point["time"] == first.snapshot.time

    # the disk's image: vdb as the first backup took it (the guest never writes vdb)
    images = tmp_path / "images"
    done = cli(
        "vm",
        "restore",
        "latest",
        "duo",
        "--disk",
        "vdb",
        "--target",
        str(images),
        "--format",
        "raw",
        repo=repo,
    )
    assert done.returncode == 0, done.stderr
    compare = subprocess.run(
        ["qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2", str(images / "vdb.raw"), str(duo.vdb)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compare.returncode == 0, compare.stdout + compare.stderr
    [line] = [x for x in done.stdout.splitlines() if x.startswith("disk vdb: ")]
    assert f"(as of snapshot {old}, " in line and f"earlier: snapshot {new} does not hold it)" in line
    assert json.loads((images / "duo.json").read_text())["restored_from"] == {"vdb": first.snapshot_id}

    # vda is in the snapshot asked for: no word of earlier snapshots
    done = cli(
        "vm",
        "restore",
        "latest",
        "duo",
        "--disk",
        "vda",
        "--path",
        "/records",
        "--target",
        str(tmp_path / "r"),
        repo=repo,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert (tmp_path / "r" / "records").read_bytes().startswith(b"record 0000000001\n")

    # both disks named: each from its own snapshot, and their points in time differ
    done = cli(
        "vm",
        "restore",
        "latest",
        "duo",
        "--disk",
        "vda",
        "--disk",
        "vdb",
        "--target",
        str(tmp_path / "both"),
        repo=repo,
    )
    assert done.returncode == 0, done.stderr
    assert "does not hold disk vdb of VM duo" in done.stderr and "points in time differ" in done.stderr
    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == [
        "duo.json",
        "duo.sh",
        "vda.qcow2",
        "vdb.qcow2",
    ]


def test_no_snapshot_holding_the_disk_is_one_line_naming_what_can_be_restored(
    duo: Duo, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    only = _backup(repo, "vda")
    target = tmp_path / "t"
    for command in (
        ["restore", "latest", "--vm", "duo", "--disk", "vdb", "--path", "/greeting.txt"],
        ["vm", "restore", "latest", "duo", "--disk", "vdb"],
    ):
        command += ["--target", str(target)]
        refused = cli(*command, repo=repo)
        assert refused.returncode == 1, refused.stderr
        assert refused.stdout == "" and refused.stderr == (
            f"shadowvault: error: snapshot {only.snapshot_id[:8]} of VM duo does not hold disk vdb and no "
            "earlier snapshot does: restore the disks it holds with --disk vda\n"
        )
        assert not target.exists()
    unknown = cli("vm", "restore", "latest", "duo", "--disk", "vdz", "--target", str(target), repo=repo)
    assert unknown.returncode == 2
    assert unknown.stderr == "shadowvault: error: VM duo has no disk vdz in this snapshot (disks: vda)\n"
