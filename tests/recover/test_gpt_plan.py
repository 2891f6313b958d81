"""Recover's planning for GPT and UEFI layouts, without a machine: the partitions fitted short of
the backup table with their GUIDs, the boot step picked from what the snapshot holds (GRUB's
x86_64-efi installer, a loader at the removable-media path, or nothing), a GPT disk without an ESP
warned about, an incomplete GPT record refused."""

from __future__ import annotations

import pytest

from shadowvault.components.plan import Plan
from shadowvault.disk import gpt
from shadowvault.disk.layout import BootloaderRecord, DiskLayout, FilesystemRecord, PartitionRecord
from shadowvault.errors import UnsupportedError, UsageError
from shadowvault.recover import uefi
from shadowvault.recover.grub import GRUB_INSTALL
from shadowvault.recover.plan import build_plan, fit_partitions
from shadowvault.recover.target import TargetDisk

MIB = 1 << 20
ESP_UUID = "1f0e0001-0000-4000-8000-000000000001"
ROOT_UUID = "1f0e0002-0000-4000-8000-000000000002"
DISK_GUID = "1f0e0000-0000-4000-8000-0000000000d1"


def _uefi_layout(kind: str = "grub", table: str = "gpt") -> DiskLayout:
    esp = PartitionRecord(number=1, start=MIB, size=64 * MIB)
    root = PartitionRecord(number=2, start=65 * MIB, size=2048 * MIB - 66 * MIB)
    if table == "gpt":
        esp.type_guid, esp.uuid = gpt.ESP_TYPE, ESP_UUID
        root.type_guid, root.uuid = gpt.LINUX_FS_TYPE, ROOT_UUID
    else:
        esp.type_id, root.type_id = uefi.MBR_ESP_TYPE, 0x83
    return DiskLayout(
        table=table,
        disk_size=2048 * MIB,
        disk_guid=DISK_GUID if table == "gpt" else "",
        partitions=[esp, root],
        filesystems=[
            FilesystemRecord(mount_point="/", fstype="ext4", uuid="r", partition=2, used=300 * MIB),
            FilesystemRecord(mount_point="/boot/efi", fstype="vfat", uuid="5EED-0E51", partition=1),
        ],
        bootloader=BootloaderRecord(kind=kind, config="/boot/grub/grub.cfg" if kind == "grub" else ""),
    )


def test_gpt_partitions_stop_short_of_the_backup_table() -> None:
    layout = _uefi_layout()
    same, shrunk = fit_partitions(layout, 2048 * MIB)
    assert not shrunk and [(p.start, p.size) for p in same] == [(MIB, 64 * MIB), (65 * MIB, 1982 * MIB)]
    layout.partitions[1].size = 2048 * MIB - 65 * MIB - 33 * 512  # to the last usable sector
    assert fit_partitions(layout, 2048 * MIB)[0][1].size == layout.partitions[1].size
    layout.partitions[1].size += 512  # into the backup entries: shrunk to fit
    placed, shrunk = fit_partitions(layout, 2048 * MIB)
    assert shrunk and placed[-1].start + placed[-1].size <= gpt.usable_end(2048 * MIB)
    assert [p.uuid for p in placed] == [ESP_UUID, ROOT_UUID]  # the GUIDs go with the partitions
    small, shrunk = fit_partitions(layout, 1024 * MIB)  # the root shrinks; the ESP keeps its size
    assert shrunk and small[0].size == 64 * MIB and small[1].size < 1024 * MIB - 65 * MIB
    with pytest.raises(UsageError, match="holds 300 MiB; the recorded filesystems need at least"):
        fit_partitions(layout, 300 * MIB)


def _plan(layout: DiskLayout, efi_boot: str) -> Plan:
    disk = TargetDisk("/dev/null", 1024 * MIB, is_device=False)
    return build_plan(layout, disk, "0" * 64, new_machine_id=False, efi_boot=efi_boot)


def test_the_uefi_boot_step_follows_what_the_snapshot_holds() -> None:
    layout = _uefi_layout()
    everything = {GRUB_INSTALL, uefi.EFI_MODULES}
    assert uefi.choose_boot(layout, everything.__contains__) == uefi.GRUB
    loader = {"/boot/efi/EFI/BOOT/BOOTX64.EFI"}
    assert uefi.choose_boot(layout, loader.__contains__) == uefi.KEEP
    assert uefi.choose_boot(_uefi_layout(kind="none"), (everything | loader).__contains__) == uefi.KEEP
    assert uefi.choose_boot(layout, set().__contains__) == uefi.MISSING
    assert uefi.choose_boot(_uefi_layout(table="msdos"), everything.__contains__) == uefi.GRUB  # MBR ESP

    plan = _plan(layout, uefi.GRUB)
    steps = {(a.verb, a.kind, a.target): a.reason for a in plan.actions}
    assert "--efi-directory=/boot/efi --removable --no-nvram" in steps[("install", "boot", "grub-efi")]
    assert plan.data["efi_boot"] == uefi.GRUB and not plan.data["install_grub"]  # no BIOS GRUB
    assert isinstance(plan.data["table"], gpt.GptTable) and plan.data["table"].disk_guid == DISK_GUID
    kept = _plan(layout, uefi.KEEP)
    assert ("leave", "boot", uefi.LOADER_TEXT) in {(a.verb, a.kind, a.target) for a in kept.actions}
    (warning,) = [w for w in _plan(layout, uefi.MISSING).warnings if "UEFI" in w]
    assert "the firmware will find nothing to boot" in warning


def test_a_gpt_disk_without_an_esp_is_warned_about() -> None:
    layout = _uefi_layout()
    layout.filesystems = [f for f in layout.filesystems if f.fstype != "vfat"]
    plan = _plan(layout, "")
    assert any("without an EFI system partition" in w for w in plan.warnings)
    assert not plan.data["install_grub"] and plan.data["efi_boot"] == ""
    layout.partitions[0].uuid = ""
    with pytest.raises(UnsupportedError, match="GPT partition 1 has no type GUID or unique GUID"):
        _plan(layout, "")
