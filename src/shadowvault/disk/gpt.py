"""GPT partition tables, read and written in Python, like the MBR in partition.py.

Written here rather than with sfdisk: the rescue systems this project meets (and this host) lack
util-linux's `fdisk` package, the partitions are reached through loop devices at an offset so
nothing needs the kernel to re-read the table, and the backup reads the same table from an image
file or a disk with the same code that writes it. The format is small: a protective MBR, a header
at LBA 1 with its 128 entries after it, and a backup copy of both at the end of the disk, each
checked by CRC32 (UEFI 2.x, chapter 5).

GUIDs are kept as the usual text (`blkid`'s PTUUID / PARTUUID); on disk they are mixed-endian.
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from dataclasses import dataclass

from shadowvault.errors import UnsupportedError

SIGNATURE = b"EFI PART"
REVISION = 0x00010000
HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")  # through the entries' CRC; 92 bytes
ENTRY = struct.Struct("<16s16sQQQ72s")  # type, unique GUID, first LBA, last LBA, attributes, name
ENTRY_COUNT = 128
ENTRY_SIZE = 128
PROTECTIVE = 0xEE
ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
LINUX_FS_TYPE = "0fc63daf-8483-4772-8e79-3d69d8477de4"
BIOS_BOOT_TYPE = "21686148-6449-6e6f-744e-656564454649"  # "Hah!IdontNeedEFI": GRUB's core.img (BIOS)


@dataclass(frozen=True)
class GptPartition:
    """One entry: its number (1-based slot), place and size in bytes, GUIDs, name and attribute bits."""

    number: int
    start: int
    size: int
    type_guid: str
    uuid: str
    name: str = ""
    attributes: int = 0


@dataclass(frozen=True)
class GptTable:
    disk_guid: str
    partitions: tuple[GptPartition, ...]


def entries_sectors(sector: int) -> int:
    return ENTRY_COUNT * ENTRY_SIZE // sector


def usable_end(disk_size: int, sector: int = 512) -> int:
    """The byte after the last one a partition may use (the backup entries and header follow)."""
    return (disk_size // sector - 1 - entries_sectors(sector)) * sector


def _guid_text(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw))


def _guid_raw(text: str) -> bytes:
    try:
        return uuid.UUID(text).bytes_le
    except ValueError:
        raise UnsupportedError(f"{text!r} is not a GUID") from None


def _read_at(path: str, offset: int, size: int) -> bytes:
    with open(path, "rb") as disk:
        disk.seek(offset)
        return disk.read(size)


def sector_size(path: str) -> int:
    """The logical sector size of a block device (a GPT's LBA unit), 512 for an image file."""
    name = os.path.basename(os.path.realpath(path))
    queue = f"/sys/class/block/{name}/queue/logical_block_size"
    try:
        with open(queue) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 512


def is_gpt(path: str, sector: int = 512) -> bool:
    """A protective MBR (type 0xEE) and a primary header signature at LBA 1."""
    head = _read_at(path, 0, 2 * sector)
    if len(head) < 2 * sector or head[510:512] != b"\x55\xaa":
        return False
    types = [head[446 + 16 * slot + 4] for slot in range(4)]
    return PROTECTIVE in types and head[sector : sector + 8] == SIGNATURE


def read_gpt(path: str, sector: int = 512) -> GptTable | None:
    """The GPT of a disk or image (its primary copy, checked), None when it has none."""
    if not is_gpt(path, sector):
        return None
    raw = _read_at(path, sector, sector)
    fields = HEADER.unpack_from(raw)
    (_, _, header_size, header_crc, _, _, _, _, _, disk_guid, entries_lba, count, size, entries_crc) = fields
    check = bytearray(raw[:header_size])
    check[16:20] = bytes(4)
    if zlib.crc32(check) != header_crc:
        raise UnsupportedError(f"{path}: the GPT header is damaged (CRC mismatch)")
    table = _read_at(path, entries_lba * sector, count * size)
    if zlib.crc32(table) != entries_crc:
        raise UnsupportedError(f"{path}: the GPT partition entries are damaged (CRC mismatch)")
    partitions = []
    for slot in range(count):
        type_raw, unique, first, last, attributes, name = ENTRY.unpack_from(table, slot * size)
        if type_raw == bytes(16):
            continue
        partitions.append(
            GptPartition(
                number=slot + 1,
                start=first * sector,
                size=(last - first + 1) * sector,
                type_guid=_guid_text(type_raw),
                uuid=_guid_text(unique),
                name=name.decode("utf-16-le").split("\0", 1)[0],
                attributes=attributes,
            )
        )
    return GptTable(_guid_text(disk_guid), tuple(partitions))


def _entries(table: GptTable, sector: int) -> bytes:
    out = bytearray(ENTRY_COUNT * ENTRY_SIZE)
    for part in table.partitions:
        if not 1 <= part.number <= ENTRY_COUNT:
            raise UnsupportedError(f"partition {part.number}: GPT numbers are 1-{ENTRY_COUNT}")
        if part.start % sector or part.size % sector or part.size <= 0:
            raise UnsupportedError(f"partition {part.number} is not sector-aligned")
        name = part.name.encode("utf-16-le")
        if len(name) > 72:
            raise UnsupportedError(
                f"partition {part.number}: name {part.name!r} is longer than 36 characters"
            )
        ENTRY.pack_into(
            out,
            (part.number - 1) * ENTRY_SIZE,
            _guid_raw(part.type_guid),
            _guid_raw(part.uuid),
            part.start // sector,
            (part.start + part.size) // sector - 1,
            part.attributes,
            name,
        )
    return bytes(out)


def _header(table: GptTable, sector: int, places: tuple[int, int, int, int, int], entries_crc: int) -> bytes:
    """A header; `places`: its own LBA, the other copy's, first and last usable LBA, its entries' LBA."""
    mine, other, first, last, entries_at = places
    fields: list[object] = [SIGNATURE, REVISION, HEADER.size, 0, 0, mine, other, first, last]
    fields += [_guid_raw(table.disk_guid), entries_at, ENTRY_COUNT, ENTRY_SIZE, entries_crc]
    fields[3] = zlib.crc32(HEADER.pack(*fields))
    return HEADER.pack(*fields).ljust(sector, b"\0")


def _protective_mbr(total_sectors: int, sector: int) -> bytes:
    mbr = bytearray(sector)
    count = min(total_sectors - 1, 0xFFFFFFFF)
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", PROTECTIVE, b"\xfe\xff\xff", 1, count)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


def encode_gpt(table: GptTable, disk_size: int, sector: int = 512) -> list[tuple[int, bytes]]:
    """(byte offset, bytes) to write: the protective MBR, the primary header and entries, the backup
    entries and header at the end of the disk."""
    total = disk_size // sector
    n = entries_sectors(sector)
    first, last = 2 + n, total - 2 - n
    for part in table.partitions:
        if part.start < first * sector or part.start + part.size > (last + 1) * sector:
            raise UnsupportedError(
                f"partition {part.number} ({part.start}-{part.start + part.size}) does not fit the "
                f"disk's usable area ({first * sector}-{(last + 1) * sector})"
            )
    entries = _entries(table, sector)
    crc = zlib.crc32(entries)
    return [
        (0, _protective_mbr(total, sector)),
        (sector, _header(table, sector, (1, total - 1, first, last, 2), crc)),
        (2 * sector, entries),
        ((total - 1 - n) * sector, entries),
        ((total - 1) * sector, _header(table, sector, (total - 1, 1, first, last, total - 1 - n), crc)),
    ]


def write_gpt(path: str, table: GptTable, disk_size: int, sector: int = 512) -> None:
    """Write the whole GPT (both copies and the protective MBR) to an image or a whole-disk device."""
    pieces = encode_gpt(table, disk_size, sector)
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset, data in pieces:
            os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
