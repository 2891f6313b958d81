"""A disk layout checked before recover plans anything: it comes from a repository or a hand-edited file.

Why: every field ends up somewhere that matters. Partition places become the table and the loop
devices mkfs writes through (overlapping ones would make one filesystem over another, one at byte
0 over the table itself); mount points become directories under recover's private mount directory
(`/../../etc` would mount the new filesystem over this machine's /etc); UUIDs and labels go to mkfs
(`-U random` is a valid mke2fs word; a label too long is truncated or refused only half-way) and
then into the recovered fstab, where a space or a newline would write another entry. So each is
checked here, and a bad one is refused in one line before anything is written, the same for
`--dry-run` and a real run.
"""

from __future__ import annotations

import itertools
import re
import uuid

from shadowvault.disk import gpt
from shadowvault.disk.layout import DiskLayout, FilesystemRecord, PartitionRecord
from shadowvault.errors import UsageError
from shadowvault.paths_within import is_plain_absolute

MBR_SECTOR = 512
MBR_SLOTS = 4
MAX_U32 = (1 << 32) - 1
MAX_U64 = (1 << 64) - 1
# the longest label each mkfs takes whole, in bytes (mke2fs truncates past 16; mkfs.xfs refuses past 12)
LABEL_BYTES = {"ext2": 16, "ext3": 16, "ext4": 16, "xfs": 12, "btrfs": 255, "vfat": 11}
FAT_LABEL_FORBIDDEN = set('"*+,./:;<=>?[\\]|')
FAT_SERIAL = re.compile(r"[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _bad(what: str, why: str) -> UsageError:
    return UsageError(f"the disk layout's {what} {why}: refusing it (fix it in a --layout FILE)")


def _is_guid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def first_usable(layout: DiskLayout, sector: int) -> int:
    """The first byte a partition may use: after the MBR, or after GPT's header and entries."""
    return (2 + gpt.entries_sectors(sector)) * sector if layout.table == "gpt" else MBR_SECTOR


def _check_partition(layout: DiskLayout, p: PartitionRecord, sector: int) -> None:
    what = f"partition {p.number}"
    slots = gpt.ENTRY_COUNT if layout.table == "gpt" else MBR_SLOTS
    if not 1 <= p.number <= slots:
        raise _bad(what, f"has a number outside 1-{slots}")
    unit = sector if layout.table == "gpt" else MBR_SECTOR
    if p.size <= 0 or p.start < 0 or p.start % unit or p.size % unit:
        raise _bad(what, f"has start {p.start} and size {p.size}: not positive multiples of {unit} bytes")
    if p.start < first_usable(layout, sector):
        raise _bad(what, f"starts at byte {p.start}, inside the partition table")
    if layout.table == "gpt":
        if not (_is_guid(p.type_guid) and _is_guid(p.uuid)):
            raise _bad(what, f"has a type GUID {p.type_guid!r} or unique GUID {p.uuid!r} that is not a GUID")
        if len(p.name.encode("utf-16-le")) > 72 or "\0" in p.name:
            raise _bad(what, f"has a name {p.name!r} that GPT cannot hold (36 characters at most)")
        if not 0 <= p.attributes <= MAX_U64:
            raise _bad(what, "has attribute bits outside 64 bits")
    else:
        if (p.start + p.size) // MBR_SECTOR > MAX_U32:
            raise _bad(what, "ends past what an MBR can address (2 TiB)")
        if not 1 <= p.type_id <= 0xFF:
            raise _bad(what, f"has type {p.type_id}, not a type byte 1-255")


def check_partitions(layout: DiskLayout, sector: int) -> None:
    """Numbers unique and in range, places sector-aligned, past the table, and not overlapping."""
    if layout.table == "gpt" and not _is_guid(layout.disk_guid):
        raise _bad("disk GUID", f"{layout.disk_guid!r} is not a GUID")
    if layout.table != "gpt" and not 0 <= layout.disk_signature <= MAX_U32:
        raise _bad("disk signature", f"{layout.disk_signature} does not fit 32 bits")
    numbers = [p.number for p in layout.partitions]
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicates:
        raise _bad("partition numbers", f"repeat {', '.join(map(str, duplicates))}")
    for p in layout.partitions:
        _check_partition(layout, p, sector)
    placed = sorted(layout.partitions, key=lambda p: p.start)
    for before, after in itertools.pairwise(placed):
        if after.start < before.start + before.size:
            raise _bad(f"partitions {before.number} and {after.number}", "overlap")


def _check_mount_point(record: FilesystemRecord) -> None:
    where = record.mount_point
    if not is_plain_absolute(where) or _CONTROL.search(where):
        raise _bad(f"mount point {where!r}", "is not a plain absolute path")


def uuid_is_valid(record: FilesystemRecord) -> bool:
    """Whether the record's UUID has the form its mkfs makes (a GUID; a FAT volume id XXXX-XXXX)."""
    return bool(FAT_SERIAL.fullmatch(record.uuid) if record.fstype == "vfat" else _is_guid(record.uuid))


def _check_uuid(record: FilesystemRecord) -> None:
    if not uuid_is_valid(record):
        form = "XXXX-XXXX (hex)" if record.fstype == "vfat" else "a UUID"
        raise _bad(f"UUID of {record.mount_point}", f"{record.uuid!r} is not {form}")


def _check_label(record: FilesystemRecord) -> None:
    label = record.label
    limit = LABEL_BYTES.get(record.fstype, 16)
    why = ""
    if _CONTROL.search(label):
        why = "holds a control character"
    elif len(label.encode()) > limit:
        why = f"is longer than the {limit} bytes {record.fstype} keeps"
    elif record.fstype == "vfat" and (FAT_LABEL_FORBIDDEN & set(label) or not label.isascii()):
        why = "holds characters a FAT label cannot"
    if why:
        raise _bad(f"label {label!r} of {record.mount_point}", why)


def check_filesystems(layout: DiskLayout) -> None:
    """Mount points plain and unique, one filesystem per partition, UUIDs and labels mkfs keeps as given."""
    seen_mounts: set[str] = set()
    seen_parts: dict[int, str] = {}
    for record in layout.filesystems:
        _check_mount_point(record)
        if record.mount_point in seen_mounts:
            raise _bad(f"mount point {record.mount_point}", "is given twice")
        seen_mounts.add(record.mount_point)
        if record.partition in seen_parts:
            raise _bad(
                f"partition {record.partition}",
                f"holds two filesystems ({seen_parts[record.partition]} and {record.mount_point})",
            )
        seen_parts[record.partition] = record.mount_point
        _check_uuid(record)
        _check_label(record)


def check_bootloader(layout: DiskLayout) -> None:
    config = layout.bootloader.config
    if layout.bootloader.kind != "none" and config:
        record = FilesystemRecord(mount_point=config, fstype="", uuid="", partition=0)
        try:
            _check_mount_point(record)
        except UsageError:
            raise _bad(f"bootloader configuration {config!r}", "is not a plain absolute path") from None


def check_layout(layout: DiskLayout, sector: int) -> None:
    """Everything above; `sector`: the target's logical sector size (GPT's unit)."""
    check_partitions(layout, sector)
    check_filesystems(layout)
    check_bootloader(layout)
