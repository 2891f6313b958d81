"""A disk layout is hostile input (a repository's disk-layout.json, or a hand-edited --layout): a bad
partition table, a mount point that climbs out of recover's private directory, a UUID or label mkfs
would not keep as given, are refused in one line before anything is written, for a dry run and a
real run alike, and no loop device or mount is left behind."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shadowvault.components import system_state
from tests.components.roots import make_root
from tests.inprocess_cli import one_error_line, run
from tests.recover.conftest import SMALL_ROOT_UUID
from tests.recover.machine import mounts_under, private_tempdir

MIB = 1 << 20
ROOT_UUID = SMALL_ROOT_UUID
SRV_UUID = "5eed0002-7a11-4b0c-9d0e-0123456789ab"
GOOD: dict[str, Any] = {
    "table": "msdos",
    "disk_size": 256 * MIB,
    "disk_signature": 0x5EED5EED,
    "partitions": [
        {"number": 1, "start": MIB, "size": 128 * MIB, "type_id": 0x83},
        {"number": 2, "start": 129 * MIB, "size": 126 * MIB, "type_id": 0x83},
    ],
    "filesystems": [
        {"mount_point": "/", "fstype": "ext4", "uuid": ROOT_UUID, "partition": 1, "label": "root"},
        {"mount_point": "/srv", "fstype": "ext4", "uuid": SRV_UUID, "partition": 2},
    ],
    "bootloader": {"kind": "none"},
}


def _edit(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    layout = copy.deepcopy(GOOD)
    change(layout)
    return layout


def _part(n: int, **fields: object) -> Callable[[dict[str, Any]], object]:
    return lambda layout: layout["partitions"][n].update(fields)


def _fs(n: int, **fields: object) -> Callable[[dict[str, Any]], object]:
    return lambda layout: layout["filesystems"][n].update(fields)


HOSTILE = {
    "overlapping partitions": (_part(1, start=2 * MIB), "partitions 1 and 2 overlap"),
    "a partition over the MBR": (
        _part(0, start=0),
        "partition 1 starts at byte 0, inside the partition table",
    ),
    "a negative size": (_part(0, size=-MIB), "not positive multiples of 512 bytes"),
    "an earlier partition past the end": (_part(0, size=8 << 30), "partitions 1 and 2 overlap"),
    "past MBR's 2 TiB": (_part(1, start=1 << 44, size=1 << 45), "ends past what an MBR can address"),
    "a repeated number": (_part(1, number=1), "partition numbers repeat 1"),
    "a fifth MBR slot": (_part(1, number=5), "partition 5 has a number outside 1-4"),
    "an unaligned start": (_part(1, start=129 * MIB + 1), "not positive multiples of 512 bytes"),
    "a signature past 32 bits": (lambda d: d.update(disk_signature=1 << 40), "does not fit 32 bits"),
    "a mount point climbing out": (_fs(1, mount_point="/../../../etc"), "'/../../../etc' is not a plain"),
    "a relative mount point": (_fs(1, mount_point="srv"), "mount point 'srv' is not a plain absolute path"),
    "a mount point twice": (_fs(1, mount_point="/"), "mount point / is given twice"),
    "two filesystems on one partition": (_fs(1, partition=1), "partition 1 holds two filesystems"),
    "mke2fs's word 'random'": (_fs(1, uuid="random"), "UUID of /srv 'random' is not a UUID"),
    "an fstab line in a UUID": (_fs(1, uuid=f"{SRV_UUID} /\n/dev/sdz1"), "is not a UUID"),
    "a label mke2fs truncates": (_fs(1, label="a" * 17), "longer than the 16 bytes ext4 keeps"),
    "a newline in a label": (_fs(1, label="srv\nx"), "holds a control character"),
    "a config climbing out": (
        lambda d: d.update(bootloader={"kind": "extlinux", "config": "/../../etc/extlinux.conf"}),
        "bootloader configuration '/../../etc/extlinux.conf' is not a plain absolute path",
    ),
}


def _loops_of(image: Path) -> list[str]:
    out = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def _empty_disk(tmp_path: Path) -> Path:
    """A sparse 256 MiB image: the recover target."""
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(256 * MIB)
    return disk


def _layout_file(tmp_path: Path, layout: dict[str, Any]) -> Path:
    """`layout` as the file `recover --layout` reads."""
    layout_file = tmp_path / "layout.json"
    layout_file.write_text(json.dumps(layout))
    return layout_file


def _refused_untouched(
    env: dict[str, str], tmp_path: Path, layout: dict[str, Any], snap: str, why: str
) -> None:
    disk = _empty_disk(tmp_path)
    layout_file = _layout_file(tmp_path, layout)
    with private_tempdir(tmp_path / "tmp") as private:
        for dry in ((), ("--dry-run",)):
            args = ("recover", "--disk", disk, snap, "--layout", layout_file, *dry)
            line = one_error_line(run(env, *args))
            assert why in line, line
            assert "fix it in a --layout FILE" in line
    with open(disk, "rb") as f:
        assert f.read(4 * MIB) == bytes(4 * MIB)  # no table, no filesystem
    assert _loops_of(disk) == []
    assert mounts_under(f"{private}/") == []  # nothing mounted


def _snapshot_recording(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: dict[str, Any]
) -> Path:
    """Back up a system state whose recorded disk layout is `layout`; an empty 256 MiB target disk."""
    document = {"disk-layout.json": json.dumps(layout).encode()}
    monkeypatch.setattr(system_state, "layout_documents", lambda _root: document)
    root = make_root(tmp_path / "root")
    done = run(
        env, "backup", "--component", "system-state", "--component", "files", "--source-root", root, "/"
    )
    assert done.exit_code == 0, done.stderr
    return _empty_disk(tmp_path)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_layout_file_is_refused_before_anything_is_written(
    env: dict[str, str], tmp_path: Path, small_snapshot: str, case: str
) -> None:
    change, why = HOSTILE[case]
    _refused_untouched(env, tmp_path, _edit(change), small_snapshot, why)


def test_a_hostile_layout_recorded_in_the_snapshot_is_refused(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same checks for the layout the snapshot carries (a repository is as hostile as a file)."""
    layout = _edit(_fs(1, mount_point="/../../../etc"))
    disk = _snapshot_recording(env, tmp_path, monkeypatch, layout)
    for dry in ((), ("--dry-run",)):
        line = one_error_line(run(env, "recover", "--disk", disk, "latest", *dry))
        assert "mount point '/../../../etc' is not a plain absolute path" in line
    with open(disk, "rb") as f:
        assert f.read(4 * MIB) == bytes(4 * MIB)


def test_the_good_layout_is_planned(env: dict[str, str], tmp_path: Path, small_snapshot: str) -> None:
    """The baseline the hostile cases are edits of: a plan, no error."""
    disk = _empty_disk(tmp_path)
    layout_file = _layout_file(tmp_path, GOOD)
    done = run(env, "recover", "--disk", disk, small_snapshot, "--layout", layout_file, "--dry-run")
    assert done.exit_code == 0, done.stderr
    assert f"ext4 UUID={SRV_UUID} on #2" in done.stdout


def test_plan_lines_escape_the_layouts_names(
    env: dict[str, str], tmp_path: Path, small_snapshot: str
) -> None:
    """A label, a mount point or an extlinux path that mkfs and the checks take (no C0 control) but a
    terminal obeys (C1 CSI, a bidi override, a line separator) is shown escaped in the plan, as
    `ls` shows names; --json keeps it exact."""
    label, mount = "r\u009b2J\u202e", "/srv/\u2028x"
    layout = _edit(_fs(1, label=label, mount_point=mount))
    layout["bootloader"] = {"kind": "extlinux", "config": "/boot/\u202eextlinux/extlinux.conf"}
    disk = _empty_disk(tmp_path)
    layout_file = _layout_file(tmp_path, layout)
    done = run(env, "recover", "--disk", disk, small_snapshot, "--layout", layout_file, "--dry-run")
    assert done.exit_code == 0, done.stderr
    out = done.stdout
    for raw in ("\u009b", "\u202e", "\u2028"):
        assert raw not in out, out
    assert f"ext4 UUID={SRV_UUID} LABEL=r\\xc2\\x9b2J\\xe2\\x80\\xae on #2" in out, out
    assert "/srv/\\xe2\\x80\\xa8x" in out, out
    assert "into /boot/\\xe2\\x80\\xaeextlinux," in out, out
    as_json = run(
        env, "recover", "--disk", disk, small_snapshot, "--layout", layout_file, "--dry-run", "--json"
    )
    assert as_json.exit_code == 0, as_json.stderr
    (plan,) = [json.loads(line) for line in as_json.stdout.splitlines() if '"plan"' in line]
    fs_actions = [a for a in plan["actions"] if a["kind"] == "fs"]
    assert fs_actions[-1]["target"] == mount and label in fs_actions[-1]["reason"]


def test_a_hostile_uuid_in_the_recorded_layout_neither_forges_a_plan_line_nor_edits_the_boot_config(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --layout FILE, the snapshot's recorded layout is read only to find UUIDs the file changed
    (for the boot configuration): a recorded "UUID" that is not one, with a line break and a forged
    plan line in it, is left out instead of printed as a plan line and replaced in extlinux.conf."""
    forged = "create   fs       /etc  (forged)"
    recorded = _edit(_fs(0, uuid=f"x\n{forged}"))
    recorded["bootloader"] = {"kind": "extlinux", "config": "/boot/extlinux/extlinux.conf"}
    disk = _snapshot_recording(env, tmp_path, monkeypatch, recorded)
    layout_file = _layout_file(tmp_path, {**GOOD, "bootloader": recorded["bootloader"]})
    done = run(env, "recover", "--disk", disk, "latest", "--layout", layout_file, "--dry-run")
    assert done.exit_code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert forged not in lines and not any(line.startswith(forged) for line in lines), done.stdout
    assert not any(line.startswith("replace  boot") for line in lines), done.stdout
    assert all(line.split()[0] in ("create", "run", "replace", "install", "leave") for line in lines), lines
