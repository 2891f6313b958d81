"""MBR (msdos) partition tables, read and written in Python: this host's loop devices have no partitions.

A disk's partitions are reached through loop devices at an offset (`losetup -o OFFSET --sizelimit
SIZE`), never through /dev/loopNpM, so nothing here depends on the kernel reading the table. Only
primary partitions are handled: a recorded layout with logical partitions is refused by the planner
with a clear message. GPT disks (a protective MBR) are read and written by disk/gpt.py.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from shadowvault.errors import UnsupportedError

SECTOR = 512
BOOT_CODE_SIZE = 440  # the MBR's boot code; the disk signature follows at 440, the table at 446
SIGNATURE_OFFSET = 440
TABLE_OFFSET = 446
ENTRY = struct.Struct("<B3sB3sII")  # status, CHS first, type, CHS last, first LBA, sector count
GPT_PROTECTIVE = 0xEE
EXTENDED_TYPES = {0x05, 0x0F, 0x85}


@dataclass(frozen=True)
class MbrPartition:
    """One primary partition: its slot (1-4), where it starts and how long it is, in bytes."""

    number: int
    start: int
    size: int
    type_id: int
    bootable: bool = False


@dataclass(frozen=True)
class MbrTable:
    disk_signature: int
    partitions: tuple[MbrPartition, ...]
    boot_code: bytes = b""


def read_table(path: str) -> MbrTable | None:
    """The MBR of a disk or image, None when its first sector has no 0x55AA mark (no table)."""
    with open(path, "rb") as disk:
        sector = disk.read(SECTOR)
    if len(sector) < SECTOR or sector[510:512] != b"\x55\xaa":
        return None
    (signature,) = struct.unpack_from("<I", sector, SIGNATURE_OFFSET)
    partitions = []
    for slot in range(4):
        status, _, type_id, _, first, count = ENTRY.unpack_from(sector, TABLE_OFFSET + 16 * slot)
        if type_id == 0 or count == 0:
            continue
        if type_id == GPT_PROTECTIVE:
            raise UnsupportedError(f"{path} has a GPT partition table, not MBR: read it with disk.gpt")
        partitions.append(MbrPartition(slot + 1, first * SECTOR, count * SECTOR, type_id, status == 0x80))
    return MbrTable(signature, tuple(partitions), sector[:BOOT_CODE_SIZE])


def _chs_placeholder() -> bytes:
    """CHS fields past the 8 GiB CHS limit: firmware and Linux use the LBA fields (the usual filler)."""
    return b"\xfe\xff\xff"


def encode_table(table: MbrTable) -> bytes:
    """The 512-byte first sector for `table` (boot code kept when given, zeros otherwise)."""
    sector = bytearray(SECTOR)
    sector[: len(table.boot_code)] = table.boot_code[:BOOT_CODE_SIZE]
    struct.pack_into("<I", sector, SIGNATURE_OFFSET, table.disk_signature)
    for part in table.partitions:
        if not 1 <= part.number <= 4:
            raise UnsupportedError(f"partition {part.number}: only primary partitions 1-4 are supported")
        if part.start % SECTOR or part.size % SECTOR:
            raise UnsupportedError(f"partition {part.number} is not sector-aligned")
        entry = ENTRY.pack(
            0x80 if part.bootable else 0,
            _chs_placeholder(),
            part.type_id,
            _chs_placeholder(),
            part.start // SECTOR,
            part.size // SECTOR,
        )
        sector[TABLE_OFFSET + 16 * (part.number - 1) : TABLE_OFFSET + 16 * part.number] = entry
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def write_table(path: str, table: MbrTable) -> None:
    """Write the first sector of `path` (an image or a whole-disk device), synced to the disk."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, encode_table(table), 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_boot_code(path: str, code: bytes) -> None:
    """Put bootloader code (syslinux's mbr.bin) into the first 440 bytes, keeping the table."""
    if len(code) > BOOT_CODE_SIZE:
        raise UnsupportedError(f"MBR boot code is {len(code)} bytes, more than {BOOT_CODE_SIZE}")
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, code, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
