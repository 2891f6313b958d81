"""The recovery plan: partitions fitted to the target disk, filesystems, restores, fixes, bootloader.

`--dry-run` prints this plan and stops; `apply.py` carries out exactly what it lists. The recorded
partitions keep their places when the target is large enough. On a smaller disk each partition
holding a filesystem is shrunk toward what its data needs (bytes used at backup time, plus a fifth
and the filesystem's own minimum) and the rest of the disk is shared in proportion to the recorded
sizes; the EFI system partition keeps its size. A disk too small for that is refused before
anything is written. The table is the recorded kind, MBR or GPT (tables.py); the bootloader steps
(boot_plan.py) are BIOS (extlinux, GRUB; on GPT through a BIOS boot partition), UEFI (uefi.py), or
both on a hybrid GPT disk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from shadowvault.components.plan import Plan
from shadowvault.disk import gpt
from shadowvault.disk.layout import DiskLayout, FilesystemRecord, PartitionRecord
from shadowvault.errors import UnsupportedError, UsageError
from shadowvault.paths_within import is_within
from shadowvault.recover import boot_plan, layout_checks, tables, uefi
from shadowvault.recover.target import TargetDisk

MIB = 1 << 20
FS_MINIMUM = {"xfs": 300 * MIB, "btrfs": 256 * MIB, "vfat": 33 * MIB}
DEFAULT_MINIMUM = 32 * MIB
MKFS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat"}
COMPONENTS = ("files", "system-state")


@dataclass(frozen=True)
class FilesystemStep:
    """A filesystem to make on a planned partition, and where it is mounted during the restore."""

    record: FilesystemRecord
    partition: PartitionRecord  # as placed on the target


def _mib_up(size: int) -> int:
    return -(-size // MIB) * MIB


def needed_size(record: FilesystemRecord) -> int:
    """The smallest partition that holds the filesystem's data with room to spare."""
    return _mib_up(max(FS_MINIMUM.get(record.fstype, DEFAULT_MINIMUM), record.used * 6 // 5 + 32 * MIB))


def fit_partitions(
    layout: DiskLayout, disk_size: int, sector: int = 512
) -> tuple[list[PartitionRecord], bool]:
    """The recorded partitions placed on a disk of `disk_size` bytes; (partitions, shrunk)."""
    parts = sorted(layout.partitions, key=lambda p: p.start)
    if not parts:
        raise UsageError("the disk layout has no partitions")
    end = tables.usable_end(layout, disk_size, sector)
    if parts[-1].start + parts[-1].size <= end:
        return parts, False
    usable = end - end % MIB
    esp = uefi.esp_of(layout)
    # what shrinks: the filesystems' partitions, but not the EFI system partition (firmware and
    # FAT32 want it as made; it is small) nor a partition without a recorded filesystem (a BIOS
    # boot partition: GRUB's core.img; swap)
    by_partition = {f.partition: f for f in layout.filesystems if esp is None or f.partition != esp.partition}
    minimum = {
        p.number: needed_size(by_partition[p.number]) if p.number in by_partition else p.size for p in parts
    }
    first = parts[0].start
    need = first + sum(minimum.values())
    if need > usable:
        raise UsageError(
            f"the target disk holds {disk_size // MIB} MiB; the recorded filesystems need at least "
            f"{need // MIB} MiB (their data plus room): use a larger disk"
        )
    spare = usable - need
    give = {p.number: max(0, p.size - minimum[p.number]) for p in parts if p.number in by_partition}
    wanted = sum(give.values()) or 1
    placed, at = [], first
    for p in parts:
        size = p.size  # kept as recorded: the ESP, a BIOS boot partition (often 34..2047), swap
        if p.number in give:
            size = minimum[p.number] + give[p.number] * spare // wanted
            size = min(p.size, size - size % MIB)
        placed.append(msgspec.structs.replace(p, start=at, size=size))
        at += size
    return placed, True


def mark_boot_partition(partitions: list[PartitionRecord], layout: DiskLayout) -> list[PartitionRecord]:
    """syslinux's mbr.bin boots the active partition: the one holding extlinux.conf, when none is."""
    config = layout.bootloader.config
    holders = [f for f in layout.filesystems if config == f.mount_point or is_within(config, f.mount_point)]
    if not holders:
        return partitions
    number = max(holders, key=lambda f: len(f.mount_point)).partition
    return [msgspec.structs.replace(p, bootable=True) if p.number == number else p for p in partitions]


def build_plan(
    layout: DiskLayout,
    target: TargetDisk,
    snapshot_id: str,
    *,
    new_machine_id: bool,
    grub_missing: Sequence[str] = (),
    efi_boot: str = "",
) -> Plan:
    """What recover will do to `target`, changing nothing (`grub_missing`: what the snapshot lacks of
    GRUB's BIOS installer, for a GRUB machine; `efi_boot`: uefi.choose_boot's answer for a layout
    with an EFI system partition)."""
    tables.check_table(layout)
    if not any(f.mount_point == "/" for f in layout.filesystems):
        raise UsageError("the disk layout has no root filesystem (mount point /)")
    for record in layout.filesystems:
        if record.fstype not in MKFS:
            raise UnsupportedError(f"{record.mount_point}: cannot make a {record.fstype} filesystem")
    sector = gpt.sector_size(target.path)
    layout_checks.check_layout(layout, sector)  # hostile or mistaken fields, before they are used
    partitions, shrunk = fit_partitions(layout, target.size, sector)
    if (
        layout.table == "msdos"
        and layout.bootloader.kind == "extlinux"
        and not any(p.bootable for p in partitions)
    ):
        partitions = mark_boot_partition(partitions, layout)
    plan = Plan("recover", target.path)
    plan.add("create", "table", target.path, tables.describe_table(layout))
    by_number = {p.number: p for p in partitions}
    for p in partitions:
        plan.add("create", "partition", f"{target.path} #{p.number}", tables.describe_partition(layout, p))
    if shrunk:
        plan.warn(
            f"the target disk is smaller than the source's ({layout.disk_size // MIB} MiB): partitions shrunk"
        )
    steps = []
    for record in sorted(layout.filesystems, key=lambda f: (f.mount_point.count("/"), f.mount_point)):
        if record.partition not in by_number:
            raise UsageError(
                f"{record.mount_point} is on partition {record.partition}, which the layout lacks"
            )
        part = by_number[record.partition]
        steps.append(FilesystemStep(record, part))
        label = f" LABEL={record.label}" if record.label else ""
        plan.add(
            "create", "fs", record.mount_point, f"{record.fstype} UUID={record.uuid}{label} on #{part.number}"
        )
    for name in COMPONENTS:
        plan.add("run", "restore", name, f"from snapshot {snapshot_id[:8]}")
    plan.add("replace", "fstab", "/etc/fstab", "devices of the recorded filesystems by UUID")
    if new_machine_id:
        plan.add("replace", "file", "/etc/machine-id", "emptied: a new one is made at first boot")
    boot = boot_plan.plan_boot(plan, layout, grub_missing=grub_missing, efi_boot=efi_boot)
    plan.data.update(
        table=tables.table_for(layout, partitions),
        disk_size=target.size,
        filesystems=steps,
        layout=layout,
        install_grub=boot.install_grub,
        install_extlinux=boot.install_extlinux,
        efi_boot=boot.efi_boot,
        is_device=target.is_device,
    )
    return plan
