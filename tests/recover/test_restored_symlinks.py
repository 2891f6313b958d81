"""The bootloader step stays on the recovered disk: a snapshot whose /boot/extlinux is a symlink to
an absolute path (hostile, or a machine's odd layout) must not make recover install extlinux into
whatever that path is on the machine running recover. Here the path is a directory of a "victim"
filesystem on a loop device, which must come out untouched."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from shadowvault.disk.partition import read_table
from tests.components.roots import make_root
from tests.inprocess_cli import run
from tests.recover.conftest import SMALL_ROOT_UUID
from tests.recover.conftest import attach_loop as _attach

MIB = 1 << 20
LAYOUT = {
    "table": "msdos",
    "disk_size": 256 * MIB,
    "disk_signature": 0x5EED5EED,
    "partitions": [{"number": 1, "start": MIB, "size": 255 * MIB, "type_id": 0x83}],
    "filesystems": [{"mount_point": "/", "fstype": "ext4", "uuid": SMALL_ROOT_UUID, "partition": 1}],
    "bootloader": {"kind": "extlinux", "config": "/boot/extlinux/extlinux.conf"},
}


def _empty(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_extlinux_is_not_installed_through_a_restored_symlink(
    env: dict[str, str], tmp_path: Path, loops: list[str], mounts: Callable[..., None]
) -> None:
    victim_device = _attach(loops, str(_empty(tmp_path / "victim.img", 64 * MIB)))
    subprocess.run(["mkfs.ext4", "-q", "-F", victim_device], check=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    mounts(victim_device, victim)
    (victim / "boot").mkdir()
    (victim / "boot" / "extlinux.conf").write_text("DEFAULT victim\n")
    before = sorted(os.listdir(victim / "boot"))

    root = make_root(tmp_path / "root")
    (root / "etc" / "fstab").write_text(f"UUID={SMALL_ROOT_UUID} / ext4 defaults 0 1\n")
    (root / "boot").mkdir()
    (root / "boot" / "extlinux").symlink_to(victim / "boot")  # absolute: this machine's path
    done = run(
        env, "backup", "--component", "system-state", "--component", "files", "--source-root", root, "/"
    )
    assert done.exit_code == 0, done.stderr

    disk = _empty(tmp_path / "disk.img", 256 * MIB)
    layout = tmp_path / "layout.json"
    layout.write_text(json.dumps(LAYOUT))
    done = run(env, "recover", "--disk", disk, "latest", "--layout", layout)
    assert "Traceback" not in done.stderr
    assert done.exit_code == 0, done.stderr
    assert "extlinux was not installed: /boot/extlinux/extlinux.conf is not a file" in done.stderr
    assert sorted(os.listdir(victim / "boot")) == before  # no ldlinux.sys / ldlinux.c32 there
    table = read_table(str(disk))
    assert table is not None and [p.number for p in table.partitions] == [1]
    assert subprocess.run(["losetup", "-j", str(disk)], capture_output=True, text=True).stdout == ""
