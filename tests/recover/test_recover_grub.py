"""Bare-metal recovery of a GRUB machine (BIOS, MBR), proven by booting: the source disk boots with
GRUB as Debian installs it (grub-pc), is backed up from its mounted partitions and recovered onto a
smaller empty image; recover runs the recovered system's own grub-install in a chroot, and the
recovered disk boots under QEMU/TCG through its own MBR and GRUB to a login prompt, where the boot
probe shows the account, the unit, the package and the data (tests/recover/machine.py)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.disk.layout import BootloaderRecord, DiskLayout, FilesystemRecord, PartitionRecord
from shadowvault.disk.partition import read_table
from shadowvault.errors import CommandError
from shadowvault.recover.grub import system_dirs_bound
from shadowvault.recover.plan import build_plan
from shadowvault.recover.target import TargetDisk
from tests.fixtures.boot_disk import GRUB_MARKER
from tests.fixtures.tools import require_root
from tests.inprocess_cli import json_out, run
from tests.recover.machine import (
    DISK_SIGNATURE,
    ROOT_UUID,
    Backup,
    attached,
    backed_up_machine,
    boot_until_login,
    messages,
    mounted,
    mounts_under,
    probe_facts,
    recover_onto,
)

pytestmark = pytest.mark.lab  # builds a machine and boots its recovered disk (make test-lab)

MIB = 1 << 20
TARGET_SIZE = 768 * MIB  # smaller than the source's 1 GiB: the data fits


@pytest.fixture(scope="module")
def grub_backup() -> Iterator[Backup]:
    """The GRUB source machine built, backed up from its mounted image, and taken apart again."""
    with backed_up_machine("grub") as built:
        yield built


def _loops_over(image: Path) -> str:
    return subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True).stdout


def test_recover_of_a_grub_machine_installs_grub_and_boots(grub_backup: Backup) -> None:
    target = grub_backup.directory / "target.img"
    with open(target, "wb") as f:
        f.truncate(TARGET_SIZE)
    plan = json_out(
        run(grub_backup.env, "recover", "--disk", target, grub_backup.snapshot, "--dry-run", "--json")
    )
    assert isinstance(plan, dict)
    actions = {(a["verb"], a["kind"], a["target"]): a["reason"] for a in plan["actions"]}
    assert "grub-install --target=i386-pc" in actions[("install", "boot", "grub")]
    assert not any("GRUB" in w for w in plan["warnings"]), plan["warnings"]

    done = recover_onto(grub_backup, target)
    assert done.summary["errors"] == [] and done.summary["warnings"] == []
    assert done.mounts_left == []  # the binds are gone
    assert _loops_over(target) == ""  # and the whole-disk loop device too
    with open(target, "rb") as f:
        mbr = f.read(512)
    assert b"GRUB" in mbr[:440]  # GRUB's boot.img, not syslinux's mbr.bin
    table = read_table(str(target))
    assert table is not None and table.disk_signature == DISK_SIGNATURE  # GRUB kept the table
    assert [p.number for p in table.partitions] == [1, 2]

    console = boot_until_login(target, grub_backup.directory / "serial.log")
    assert GRUB_MARKER in console, console
    facts = probe_facts(console)
    assert facts["target"] == "active", console
    assert "(alice)" in facts["id"] and "(devs)" in facts["id"], console
    assert facts["probe-app"] == "enabled active", console
    assert facts["hello"].endswith("Hello, world!"), console
    assert facts["data"] == grub_backup.data_sha256, console
    assert facts["root"] == ROOT_UUID, console
    assert "sourcebox login:" in console, console


def test_a_grub_machine_without_grub_install_in_the_snapshot_is_warned_about() -> None:
    """Nothing to run grub-install with: the plan says so and installs nothing (the warning of old)."""
    layout = DiskLayout(
        partitions=[PartitionRecord(number=1, start=MIB, size=512 * MIB, type_id=0x83, bootable=True)],
        filesystems=[FilesystemRecord(mount_point="/", fstype="ext4", uuid=ROOT_UUID, partition=1)],
        bootloader=BootloaderRecord(kind="grub", config="/boot/grub/grub.cfg"),
    )
    disk = TargetDisk("/dev/null", 1024 * MIB, is_device=False)
    plan = build_plan(layout, disk, "0" * 64, new_machine_id=False, grub_missing=["/usr/sbin/grub-install"])
    assert ("install", "boot", "grub") not in {(a.verb, a.kind, a.target) for a in plan.actions}
    (warning,) = plan.warnings
    assert "the snapshot lacks /usr/sbin/grub-install" in warning and "grub-install" in warning
    assert not plan.data["install_grub"]
    ready = build_plan(layout, disk, "0" * 64, new_machine_id=False)
    assert ready.data["install_grub"] and ready.warnings == []


def test_the_chroot_binds_are_undone_when_the_install_fails(tmp_path: Path) -> None:
    require_root()
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(CommandError), system_dirs_bound(root):
        assert mounts_under(str(root)) == [str(root / "dev"), str(root / "proc"), str(root / "sys")]
        raise CommandError("grub-install failed: as a test")
    assert mounts_under(str(root)) == []


def test_grub_onto_a_block_device_with_an_edited_root_uuid(grub_backup: Backup) -> None:
    """A block device as the target (a loop device stands for /dev/sdX) and a layout giving the root
    another UUID: grub.cfg follows, and grub-install's core.img searches for the new UUID."""
    done = run(
        grub_backup.env,
        "dump",
        grub_backup.snapshot,
        "/.shadowvault-components/system-state/disk-layout.json",
    )
    assert done.exit_code == 0, done.stderr
    layout = json.loads(done.stdout)
    assert layout["bootloader"] == {"kind": "grub", "config": "/boot/grub/grub.cfg"}
    new_uuid = "0dd00001-7a11-4b0c-9d0e-0123456789ab"
    (root,) = [f for f in layout["filesystems"] if f["mount_point"] == "/"]
    root["uuid"] = new_uuid
    edited = grub_backup.directory / "layout.json"
    edited.write_text(json.dumps(layout))
    image = grub_backup.directory / "device.img"
    with open(image, "wb") as f:
        f.truncate(TARGET_SIZE)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        done = run(
            grub_backup.env, "recover", "--disk", device, grub_backup.snapshot, "--layout", edited, "--json"
        )
        assert done.exit_code == 0, done.stderr
        (plan,) = [m for m in messages(done.stdout) if m["message_type"] == "plan"]
        actions = {(a["verb"], a["kind"], a["target"]): a["reason"] for a in plan["actions"]}
        assert actions[("replace", "boot", "/boot/grub/grub.cfg")] == f"UUID {ROOT_UUID} -> {new_uuid}"
        assert ("install", "boot", "grub") in actions
    finally:
        subprocess.run(["losetup", "-d", device], check=True)
    assert _loops_over(image) == ""
    with open(image, "rb") as f:
        head = f.read(MIB)
    assert b"GRUB" in head[:440] and head[512:1024] != bytes(512)  # boot.img, and core.img after it
    table = read_table(str(image))
    assert table is not None
    part = table.partitions[0]
    with (
        attached(image, part) as partition,
        mounted(partition, grub_backup.directory / "device-root") as where,
    ):
        assert f"root=UUID={new_uuid}" in (where / "boot/grub/grub.cfg").read_text()
        assert ROOT_UUID not in (where / "boot/grub/grub.cfg").read_text()
        assert f"search.fs_uuid {new_uuid} root" in (where / "boot/grub/i386-pc/load.cfg").read_text()
