"""A whole-VM restore of a snapshot that holds only some disks (issue 13), with a bare QEMU and two disks.

`vm backup NAME --vm-disk drive1` makes a snapshot of drive1 alone. Restoring the VM from it gives
every disk: drive1 from it, drive0 from the newest earlier snapshot that holds it, and the output
says so per disk (snapshot and time). Where no snapshot holds drive0 the restore refuses in one
line and leaves nothing behind; `--disk drive1` restores what is there. Each restored image is
compared with `qemu-img compare` against raw copies taken right after each backup.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from shadowvault.jobs.backup_vm import VmBackupRequest, VmBackupResult, run_vm_backup
from shadowvault.repo.repository import Repository
from tests.vm.conftest import Pair
from tests.vm.helpers import cli


def _backup(repo: Repository, *disks: str) -> VmBackupResult:
    warnings: list[str] = []
    result = run_vm_backup(repo, VmBackupRequest(vm="pair", disks=list(disks)), on_warning=warnings.append)
    assert warnings == []
    return result


def _same(image: str | Path, expected: Path, fmt: str = "raw") -> None:
    compare = subprocess.run(
        ["qemu-img", "compare", "-f", fmt, "-F", "raw", str(image), str(expected)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compare.returncode == 0, f"{image}: {compare.stdout}{compare.stderr}"


def test_whole_vm_restore_takes_a_disk_the_snapshot_left_out_from_the_earlier_one_that_holds_it(
    pair: Pair, repo: Repository, tmp_path: Path
) -> None:
    pair.write("drive0", 0x11, "0", "1M")
    pair.write("drive1", 0x12, "0", "1M")
    first = _backup(repo)
    at_first = pair.as_now("first")
    pair.write("drive0", 0x21, "1M", "64k")  # after the first backup: not in any snapshot
    pair.write("drive1", 0x22, "2M", "64k")
    second = _backup(repo, "drive1")
    at_second = pair.as_now("second")
    assert second.definition.chosen == ["drive1"] and second.definition.left_out == ["drive0"]
    repo_path = tmp_path / "repo"

    # the listing shows which disks each VM snapshot holds
    listed = cli("snapshots", "--json", repo=repo_path)
    assert listed.returncode == 0, listed.stderr
    held = {s["id"]: s["components"] for s in json.loads(listed.stdout)}
    assert held == {first.snapshot_id: ["pair/drive0", "pair/drive1"], second.snapshot_id: ["pair/drive1"]}
    table = cli("snapshots", repo=repo_path)
    row = next(line for line in table.stdout.splitlines() if line.startswith(second.snapshot_id[:8]))
    assert "pair/drive1" in row and "pair/drive0" not in row

    target = tmp_path / "whole"
    done = cli("vm", "restore", "latest", "pair", "--target", str(target), "--format", "raw", repo=repo_path)
    assert done.returncode == 0, done.stderr
    _same(target / "drive1.raw", at_second["drive1"])
    _same(target / "drive0.raw", at_first["drive0"])
    lines = {line.split(":")[0]: line for line in done.stdout.splitlines() if line.startswith("disk ")}
    assert f"as of snapshot {first.snapshot_id[:8]}, " in lines["disk drive0"]
    assert f"earlier: snapshot {second.snapshot_id[:8]} does not hold it" in lines["disk drive0"]
    assert f"as of snapshot {second.snapshot_id[:8]}, " in lines["disk drive1"]
    assert "earlier" not in lines["disk drive1"]
    assert "points in time differ" in done.stderr and "Traceback" not in done.stderr
    definition = json.loads((target / "pair.json").read_text())
    assert [d["disk"] for d in definition["disks"]] == ["drive1", "drive0"]
    assert definition["restored_from"] == {"drive1": second.snapshot_id, "drive0": first.snapshot_id}
    argv = " ".join(definition["argv"])
    assert str(target / "drive0.raw") in argv and str(target / "drive1.raw") in argv
    assert str(pair.images["drive0"]) not in argv and str(pair.images["drive1"]) not in argv

    # the same restore on `restore --vm`, in JSON: each disk's snapshot and time
    as_json = cli(
        "restore", "latest", "--vm", "pair", "--target", str(tmp_path / "j"), "--json", repo=repo_path
    )
    assert as_json.returncode == 0, as_json.stderr
    points = json.loads(as_json.stdout)["points_in_time"]
    assert {d: (p["snapshot_id"], p["earlier"]) for d, p in points.items()} == {
        "drive1": (second.snapshot_id, False),
        "drive0": (first.snapshot_id, True),
    }
    _same(tmp_path / "j" / "drive0.qcow2", at_first["drive0"], "qcow2")

    # one disk: from the snapshot asked for, as before, and no word of points in time
    single = cli(
        "vm", "restore", "latest", "pair", "--disk", "drive1", "--target", str(tmp_path / "s"), repo=repo_path
    )
    assert single.returncode == 0 and single.stderr == "", single.stderr
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["drive1.qcow2", "pair.json", "pair.sh"]
    assert "as of snapshot" not in single.stdout

    # in place, once the VM is stopped: both disks, each as of its own snapshot
    pair.vm.quit()
    in_place = cli("vm", "restore", "latest", "pair", "--in-place", "--json", repo=repo_path)
    assert in_place.returncode == 0, in_place.stderr
    assert sorted(json.loads(in_place.stdout)["set_aside"]) == ["drive0", "drive1"]
    _same(pair.images["drive0"], at_first["drive0"], "qcow2")
    _same(pair.images["drive1"], at_second["drive1"], "qcow2")


def test_whole_vm_restore_refuses_when_no_snapshot_holds_a_disk(
    pair: Pair, repo: Repository, tmp_path: Path
) -> None:
    pair.write("drive1", 0x31, "0", "1M")
    _backup(repo, "drive1")
    pair.write("drive1", 0x32, "1M", "64k")
    _backup(repo, "drive1")
    at_last = pair.as_now("last")
    target = tmp_path / "t"
    for command in (
        ["vm", "restore", "latest", "pair", "--target", str(target)],
        ["restore", "latest", "--vm", "pair", "--target", str(target)],
        ["vm", "restore", "latest", "pair", "--in-place"],
    ):
        refused = cli(*command, repo=tmp_path / "repo")
        assert refused.returncode == 1, refused.stderr
        assert refused.stdout == "" and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert "does not hold disk drive0 and no earlier snapshot does" in refused.stderr
        assert "--disk drive1" in refused.stderr and "Traceback" not in refused.stderr
        assert not target.exists()
    assert not list(pair.images["drive1"].parent.glob("*.pre-restore-*"))

    done = cli(
        "vm",
        "restore",
        "latest",
        "pair",
        "--disk",
        "drive1",
        "--target",
        str(target),
        "--format",
        "raw",
        repo=tmp_path / "repo",
    )
    assert done.returncode == 0, done.stderr
    _same(target / "drive1.raw", at_last["drive1"])
