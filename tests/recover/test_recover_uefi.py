"""Bare-metal recovery of a UEFI machine on a GPT disk, proven by booting with OVMF: the source disk
(ESP + ext4 root + ext4 /srv/archive, Debian's grub-efi in \\EFI\\debian, no removable-path loader)
is backed up from its mounted partitions and recovered onto a smaller empty image; recover writes
the GPT with the recorded disk GUID, PARTUUIDs, names and attributes, remakes the ESP with its
volume id and label, and runs the recovered system's grub-install for the firmware's removable-media
path. The disk then boots under QEMU/TCG with OVMF and an empty NVRAM (no boot entry) through GRUB
to the login prompt, where the probe shows the account, the unit, the package and the data
(tests/recover/machine.py, efi_machine.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.disk import gpt
from tests.fixtures.boot_disk import GRUB_MARKER, OVMF_CODE, OVMF_VARS
from tests.inprocess_cli import json_out, one_error_line, run
from tests.recover.efi_machine import (
    ARCHIVE_PART,
    DISK_GUID,
    ESP_LABEL,
    ESP_NOTE,
    ESP_PART,
    ESP_VOLID,
    NO_AUTOMOUNT,
    ROOT_PART,
    TABLE,
    fat_listing,
    fat_read,
)
from tests.recover.machine import (
    ARCHIVE_NOTE,
    ROOT_UUID,
    Backup,
    attached,
    backed_up_machine,
    boot_until_login,
    probe_facts,
    recover_onto,
)

pytestmark = pytest.mark.lab  # builds a machine and boots its recovered disk (make test-lab)

MIB = 1 << 20
TARGET_SIZE = 768 * MIB  # smaller than the source's 1 GiB: the data fits


@pytest.fixture(scope="module")
def efi_backup() -> Iterator[Backup]:
    """The UEFI source machine built, backed up from its mounted image, and taken apart again."""
    missing = [str(p) for p in (OVMF_CODE, OVMF_VARS) if not p.is_file()]
    if missing:
        pytest.fail(f"missing UEFI firmware {', '.join(missing)} (install the ovmf package)")
    with backed_up_machine("grub-efi") as built:
        yield built


def _empty_disk(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _loops_over(image: Path) -> str:
    return subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True).stdout


def test_the_backup_records_the_gpt_layout(efi_backup: Backup) -> None:
    done = run(
        efi_backup.env, "dump", efi_backup.snapshot, "/.shadowvault-components/system-state/disk-layout.json"
    )
    assert done.exit_code == 0, done.stderr
    layout = json.loads(done.stdout)
    assert layout["table"] == "gpt" and layout["disk_guid"] == DISK_GUID and "disk_signature" not in layout
    assert layout["partitions"] == [
        {"number": p.number, "start": p.start, "size": p.size, "type_guid": p.type_guid, "uuid": p.uuid,
         "name": p.name, **({"attributes": p.attributes} if p.attributes else {})}
        for p in TABLE.partitions
    ]  # fmt: skip
    esp = next(f for f in layout["filesystems"] if f["mount_point"] == "/boot/efi")
    assert (esp["fstype"], esp["uuid"], esp["label"], esp["partition"]) == ("vfat", ESP_VOLID, ESP_LABEL, 1)
    assert esp["options"] == "noauto,umask=0077"
    assert {f["mount_point"]: f["partition"] for f in layout["filesystems"]} == {
        "/": 2,
        "/boot/efi": 1,
        "/srv/archive": 3,
    }
    assert layout["bootloader"] == {"kind": "grub", "config": "/boot/grub/grub.cfg"}


def test_recover_onto_a_smaller_disk_boots_with_uefi(efi_backup: Backup) -> None:
    target = _empty_disk(efi_backup.directory / "target.img", TARGET_SIZE)
    plan = json_out(
        run(efi_backup.env, "recover", "--disk", target, efi_backup.snapshot, "--dry-run", "--json")
    )
    assert isinstance(plan, dict)
    actions = {(a["verb"], a["kind"], a["target"]): a["reason"] for a in plan["actions"]}
    assert actions[("create", "table", str(target))] == f"GPT, disk GUID {DISK_GUID}"
    assert (
        f"type EFI system, PARTUUID {ESP_PART.uuid}, name 'EFI System Partition'"
        in (actions[("create", "partition", f"{target} #1")])
    )
    assert actions[("create", "partition", f"{target} #3")].endswith(f"attributes {NO_AUTOMOUNT:#x}")
    assert actions[("create", "fs", "/boot/efi")] == f"vfat UUID={ESP_VOLID} LABEL={ESP_LABEL} on #1"
    assert (
        "--target=x86_64-efi --efi-directory=/boot/efi --removable --no-nvram"
        in (actions[("install", "boot", "grub-efi")])
    )
    assert plan["warnings"] == [
        "the target disk is smaller than the source's (1024 MiB): partitions shrunk"
    ], plan["warnings"]
    with open(target, "rb") as f:
        assert f.read(MIB) == bytes(MIB)  # the dry run wrote nothing

    done = recover_onto(efi_backup, target)
    assert done.summary["errors"] == [] and done.summary["warnings"] == [], done.summary
    assert done.mounts_left == []
    assert _loops_over(target) == ""
    table = gpt.read_gpt(str(target))
    assert table is not None and table.disk_guid == DISK_GUID
    kept = [(p.number, p.type_guid, p.uuid, p.name, p.attributes) for p in table.partitions]
    assert kept == [(p.number, p.type_guid, p.uuid, p.name, p.attributes) for p in TABLE.partitions]
    assert table.partitions[-1].start + table.partitions[-1].size <= gpt.usable_end(TARGET_SIZE)
    listed = subprocess.run(  # util-linux's own GPT reader (it checks the CRCs) agrees
        ["partx", "-g", "-r", "-o", "NR,UUID,NAME,FLAGS", str(target)], capture_output=True, text=True
    )
    assert listed.stdout.split("\n")[2].split(" ") == [
        "3",
        ARCHIVE_PART.uuid,
        "svarchive",
        f"{NO_AUTOMOUNT:#x}",
    ]
    with attached(target, table.partitions[0]) as esp_dev:
        probe = subprocess.run(["blkid", "-p", "-o", "export", esp_dev], capture_output=True, text=True)
        assert {f"UUID={ESP_VOLID}", f"LABEL={ESP_LABEL}", "TYPE=vfat"} <= set(probe.stdout.splitlines())
        listing = fat_listing(esp_dev)
        assert "/EFI/BOOT/BOOTX64.EFI" in listing, listing  # the removable-media path, made by recover
        assert "/EFI/debian/grubx64.efi" in listing, listing  # the source's own, restored
        assert fat_read(esp_dev, "/sv-note.txt") == ESP_NOTE
        fsck = subprocess.run(["fsck.fat", "-n", esp_dev], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr

    uefi_vars = efi_backup.directory / "OVMF_VARS.fd"  # a fresh, empty NVRAM: no boot entries
    shutil.copyfile(OVMF_VARS, uefi_vars)
    console = boot_until_login(target, efi_backup.directory / "serial.log", uefi_vars)
    assert GRUB_MARKER in console, console
    facts = probe_facts(console)
    assert facts["target"] == "active", console
    assert "(alice)" in facts["id"] and "(devs)" in facts["id"], console
    assert facts["probe-app"] == "enabled active", console
    assert facts["hello"].endswith("Hello, world!"), console
    assert facts["data"] == efi_backup.data_sha256, console
    assert facts["archive"] == f"{ARCHIVE_NOTE.strip()} svarchive", console  # mounted by PARTUUID
    assert facts["archive partuuid"] == ARCHIVE_PART.uuid, console
    assert facts["root"] == ROOT_UUID, console
    assert "sourcebox login:" in console, console


def test_a_gpt_disk_too_small_for_the_data_is_refused_untouched(efi_backup: Backup) -> None:
    small = _empty_disk(efi_backup.directory / "small.img", 200 * MIB)
    line = one_error_line(run(efi_backup.env, "recover", "--disk", small, efi_backup.snapshot))
    assert "the target disk holds 200 MiB; the recorded filesystems need at least" in line
    with open(small, "rb") as f:
        assert f.read(MIB) == bytes(MIB)
    assert ROOT_PART.number == 2  # the root is not the first partition: the fit follows the table


def test_recover_onto_a_whole_disk_block_device(efi_backup: Backup) -> None:
    """A block device as the target (a loop device over an image stands for /dev/sdX): the same GPT
    (sized to the device), the ESP filled, grub-install's loader at the removable-media path."""
    image = _empty_disk(efi_backup.directory / "device.img", TARGET_SIZE)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        done = run(efi_backup.env, "recover", "--disk", device, efi_backup.snapshot)
        assert done.exit_code == 0, done.stderr
        assert "recovered " + device in done.stdout
    finally:
        subprocess.run(["losetup", "-d", device], check=True)
    table = gpt.read_gpt(str(image))
    assert table is not None and table.disk_guid == DISK_GUID
    assert [p.uuid for p in table.partitions] == [p.uuid for p in TABLE.partitions]
    with open(image, "rb") as f:  # the backup header in the device's last sector
        f.seek(TARGET_SIZE - 512)
        assert f.read(8) == gpt.SIGNATURE
    with attached(image, table.partitions[0]) as esp_dev:
        listing = fat_listing(esp_dev)
    assert {"/EFI/BOOT/BOOTX64.EFI", "/EFI/debian/grubx64.efi", "/sv-note.txt"} <= set(listing), listing
