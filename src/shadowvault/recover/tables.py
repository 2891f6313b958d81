"""The partition table a recovery writes: the recorded MBR or GPT, with the partitions as fitted.

MBR keeps its disk signature, types and active flag; GPT keeps its disk GUID and each partition's
type GUID, unique GUID (PARTUUID), name and attribute bits, so that what names a partition by
PARTUUID or PARTLABEL (fstab, a kernel's `root=PARTUUID=`, firmware boot entries) still finds it.
Only the places and sizes may differ (a smaller disk).
"""

from __future__ import annotations

from shadowvault.disk import gpt
from shadowvault.disk.layout import DiskLayout, PartitionRecord
from shadowvault.disk.partition import MbrPartition, MbrTable, write_table
from shadowvault.errors import UnsupportedError

MIB = 1 << 20
TABLES = ("msdos", "gpt")
TYPE_NAMES = {
    gpt.ESP_TYPE: "EFI system",
    gpt.LINUX_FS_TYPE: "Linux filesystem",
    gpt.BIOS_BOOT_TYPE: "BIOS boot",
}

PlannedTable = MbrTable | gpt.GptTable


def check_table(layout: DiskLayout) -> None:
    if layout.table not in TABLES:
        raise UnsupportedError(f"recover writes MBR (msdos) or GPT partition tables, not {layout.table}")
    if layout.table == "gpt":
        for p in layout.partitions:
            if not (p.type_guid and p.uuid):
                raise UnsupportedError(
                    f"GPT partition {p.number} has no type GUID or unique GUID in the layout"
                )


def usable_end(layout: DiskLayout, disk_size: int, sector: int) -> int:
    """The byte after the last one a partition may use on the target (GPT keeps its backup at the end)."""
    return gpt.usable_end(disk_size, sector) if layout.table == "gpt" else disk_size


def table_for(layout: DiskLayout, placed: list[PartitionRecord]) -> PlannedTable:
    if layout.table == "gpt":
        return gpt.GptTable(
            layout.disk_guid,
            tuple(
                gpt.GptPartition(p.number, p.start, p.size, p.type_guid, p.uuid, p.name, p.attributes)
                for p in placed
            ),
        )
    return MbrTable(
        layout.disk_signature,
        tuple(MbrPartition(p.number, p.start, p.size, p.type_id, p.bootable) for p in placed),
    )


def describe_table(layout: DiskLayout) -> str:
    if layout.table == "gpt":
        return f"GPT, disk GUID {layout.disk_guid}"
    return f"MBR, disk signature {layout.disk_signature:08x}"


def describe_partition(layout: DiskLayout, p: PartitionRecord) -> str:
    place = f"{p.start // MIB}-{(p.start + p.size) // MIB} MiB ({p.size // MIB} MiB)"
    if layout.table != "gpt":
        return f"{place}, type {p.type_id:02x}" + (", bootable" if p.bootable else "")
    kind = TYPE_NAMES.get(p.type_guid.lower(), p.type_guid)
    text = f"{place}, type {kind}, PARTUUID {p.uuid}"
    text += f", name '{p.name}'" if p.name else ""  # exact here: Action.line escapes it for people
    return text + (f", attributes {p.attributes:#x}" if p.attributes else "")


def write_planned_table(disk: str, table: PlannedTable, disk_size: int) -> None:
    """The table onto the target (MBR: its first sector; GPT: both copies and the protective MBR)."""
    if isinstance(table, gpt.GptTable):
        gpt.write_gpt(disk, table, disk_size, gpt.sector_size(disk))
    else:
        write_table(disk, table)
