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
from shadowvault.recover import boot_plan, uefi
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
            FilesystemRecord(mount_point="/", fstype="ext4", uuid=ROOT_UUID, partition=2, used=300 * MIB),
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


BIOS_BOOT_UUID = "1f0e000e-0000-4000-8000-00000000b105"


def _bios_layout(kind: str = "grub", esp: bool = False) -> DiskLayout:
    """A BIOS-booted GPT disk: a BIOS boot partition in sectors 34..2047 (as gdisk places it), the
    root after it; with `esp`, a hybrid disk (cloud images) with an ESP as well."""
    layout = _uefi_layout(kind)
    bios_boot = PartitionRecord(
        number=3, start=34 * 512, size=2014 * 512, type_guid=gpt.BIOS_BOOT_TYPE, uuid=BIOS_BOOT_UUID
    )
    layout.partitions.append(bios_boot)
    if not esp:
        layout.partitions = [p for p in layout.partitions if p.type_guid != gpt.ESP_TYPE]
        layout.partitions[0].start, layout.partitions[0].size = MIB, 2046 * MIB
        layout.filesystems = [f for f in layout.filesystems if f.fstype != "vfat"]
    return layout


def _bios_plan(layout: DiskLayout, efi_boot: str = "", grub_missing: tuple[str, ...] = ()) -> Plan:
    disk = TargetDisk("/dev/null", 1024 * MIB, is_device=False)
    return build_plan(
        layout, disk, "0" * 64, new_machine_id=False, efi_boot=efi_boot, grub_missing=grub_missing
    )


def _boot_warnings(plan: Plan) -> list[str]:
    return [w for w in plan.warnings if "partitions shrunk" not in w]  # the 2 GiB layout on 1 GiB


def test_a_bios_boot_partition_keeps_its_place_and_size_on_a_smaller_disk() -> None:
    layout = _bios_layout()
    placed, shrunk = fit_partitions(layout, 1024 * MIB)
    assert shrunk
    assert (placed[0].number, placed[0].start, placed[0].size) == (3, 34 * 512, 2014 * 512)  # not rounded
    assert placed[1].start == MIB and placed[1].size < 1024 * MIB
    steps = {(a.verb, a.kind, a.target): a.reason for a in _bios_plan(layout).actions}
    assert "type BIOS boot, PARTUUID " + BIOS_BOOT_UUID in steps[("create", "partition", "/dev/null #3")]


def test_bios_grub_on_gpt_goes_into_the_bios_boot_partition() -> None:
    plan = _bios_plan(_bios_layout())
    steps = {(a.verb, a.kind, a.target): a.reason for a in plan.actions}
    assert "--target=i386-pc --modules=part_gpt" in steps[("install", "boot", "grub")]
    assert "core.img into the BIOS boot partition #3" in steps[("install", "boot", "grub")]
    assert plan.data["install_grub"] and not plan.data["install_extlinux"] and plan.data["efi_boot"] == ""
    assert _boot_warnings(plan) == [] and not any(a.kind == "fs" and "#3" in a.reason for a in plan.actions)

    missing = _bios_plan(_bios_layout(), grub_missing=(GRUB_INSTALL,))
    (warning,) = _boot_warnings(missing)
    assert f"the snapshot lacks {GRUB_INSTALL}" in warning and not missing.data["install_grub"]
    extlinux = _bios_plan(_bios_layout(kind="extlinux"))
    (warning,) = _boot_warnings(extlinux)
    assert "(extlinux) on a GPT disk" in warning and "will not boot on its own" in warning
    assert not extlinux.data["install_extlinux"]  # syslinux's mbr.bin would not boot a GPT disk


def test_a_hybrid_gpt_disk_gets_grub_for_both_firmwares() -> None:
    layout = _bios_layout(esp=True)
    plan = _bios_plan(layout, efi_boot=uefi.GRUB)
    assert {("install", "boot", "grub-efi"), ("install", "boot", "grub")} <= {
        (a.verb, a.kind, a.target) for a in plan.actions
    }
    assert plan.data["install_grub"] and plan.data["efi_boot"] == uefi.GRUB and _boot_warnings(plan) == []
    uefi_only = _bios_plan(layout, efi_boot=uefi.GRUB, grub_missing=(GRUB_INSTALL,))
    assert not uefi_only.data["install_grub"] and _boot_warnings(uefi_only) == []  # a UEFI-booted source
    bios_only = _bios_plan(layout, efi_boot=uefi.MISSING)
    (warning,) = _boot_warnings(bios_only)
    assert "UEFI firmware will find nothing to boot (BIOS firmware boots the disk" in warning
    assert bios_only.data["install_grub"]


def test_the_snapshot_is_asked_for_bios_grub_only_where_it_could_go() -> None:
    assert boot_plan.bios_grub_possible(_bios_layout(), "")
    assert boot_plan.bios_grub_possible(_bios_layout(esp=True), uefi.GRUB)
    assert not boot_plan.bios_grub_possible(_uefi_layout(), uefi.GRUB)  # GPT without a BIOS boot partition
    assert not boot_plan.bios_grub_possible(_bios_layout(kind="extlinux"), "")
    assert boot_plan.bios_grub_possible(_uefi_layout(table="msdos"), "")
    assert not boot_plan.bios_grub_possible(_uefi_layout(table="msdos"), uefi.GRUB)
