"""The disk layout of a machine, recorded at backup time so that a bare-metal recovery can rebuild it.

Recorded: the disk that holds the source root's "/" (its size and partition table: an MBR's
signature and primary partitions, or a GPT's disk GUID and entries with their type and unique
GUIDs, names and attribute bits), every filesystem on that disk mounted at or below the source
root (type, UUID, label, size, bytes used, fstab options, which partition), and the bootloader
(extlinux or GRUB, and where its configuration lives). A disk is found from the mount's device: a
partition (/dev/sda1 -> sda, its start from sysfs) or a loop device over a disk image at an offset
(`losetup -o`, which is how this project reaches partitions of an image). The document is stored
with the system-state component as `disk-layout.json`; `recover --layout FILE` takes an edited
copy of it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import msgspec

from shadowvault import proc
from shadowvault.disk import gpt
from shadowvault.disk.fat_mount import STAGED
from shadowvault.disk.fstab import entries
from shadowvault.disk.partition import read_table
from shadowvault.errors import CommandError, ShadowvaultError, UsageError
from shadowvault.paths_within import is_within
from shadowvault.shadow.volumes import Volume, list_volumes
from shadowvault.typed_decoding import decode_json

log = logging.getLogger(__name__)

DOCUMENT = "disk-layout.json"
BLOCK_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat"})


class PartitionRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    number: int
    start: int  # bytes from the start of the disk
    size: int
    type_id: int = 0  # MBR: the partition type byte
    bootable: bool = False  # MBR: the active flag
    type_guid: str = ""  # GPT: the partition type GUID (ESP: c12a7328-...)
    uuid: str = ""  # GPT: the unique partition GUID (PARTUUID)
    name: str = ""  # GPT: the partition name (PARTLABEL)
    attributes: int = 0  # GPT: the 64 attribute bits


class FilesystemRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    mount_point: str  # as the source machine saw it ("/", "/srv")
    fstype: str
    uuid: str
    partition: int
    label: str = ""
    size: int = 0
    used: int = 0
    options: str = "defaults"  # its fstab options on the source


class BootloaderRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    kind: str = "none"  # extlinux | grub | none
    config: str = ""  # its configuration, as a path in the source root


class DiskLayout(msgspec.Struct, kw_only=True, omit_defaults=True):
    table: str = "msdos"  # msdos | gpt
    disk_size: int = 0
    disk_signature: int = 0  # MBR
    disk_guid: str = ""  # GPT
    partitions: list[PartitionRecord] = []
    filesystems: list[FilesystemRecord] = []
    bootloader: BootloaderRecord = msgspec.field(default_factory=BootloaderRecord)


def encode_layout(layout: DiskLayout) -> bytes:
    return msgspec.json.format(msgspec.json.encode(layout), indent=2) + b"\n"


def decode_layout(data: bytes, source: str = DOCUMENT) -> DiskLayout:
    try:
        return decode_json(data, DiskLayout)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise UsageError(f"{source} is not a disk layout: {err}") from None


def _sysfs_block(device: str) -> Path | None:
    name = os.path.basename(os.path.realpath(device))
    path = Path("/sys/class/block") / name
    return path if path.exists() else None


def _read(path: Path) -> str:
    return path.read_text().strip()


def disk_and_offset(device: str) -> tuple[str, int, int] | None:
    """(whole disk or image, byte offset, byte size) of a mounted block device, None if unknown."""
    block = _sysfs_block(device)
    if block is None:
        return None
    size = int(_read(block / "size")) * 512
    if (block / "loop" / "backing_file").exists():
        backing = _read(block / "loop" / "backing_file")
        return backing, int(_read(block / "loop" / "offset")), size
    if (block / "partition").exists():
        parent = block.resolve().parent.name
        return f"/dev/{parent}", int(_read(block / "start")) * 512, size
    return f"/dev/{block.name}", 0, size


def _unescape_export(value: str) -> str:
    """A value of `blkid -o export` as the filesystem holds it: blkid puts a backslash before a space,
    a quote, `$`, a backtick, `<`, `>` and a backslash (so `LABEL=my\\ root` is the label "my root")."""
    return re.sub(r"\\(.)", r"\1", value)


def probe_filesystem(device: str) -> dict[str, str]:
    """blkid's view of a filesystem (TYPE, UUID, LABEL), read from the device itself."""
    out = proc.output(["blkid", "-p", "-o", "export", device], timeout=30, check=False)
    values = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = _unescape_export(value)
    return values


def _fstab_options(source_root: Path) -> dict[str, str]:
    try:
        text = (source_root / "etc" / "fstab").read_text(errors="replace")
    except OSError:
        return {}
    return {e.mount_point: e.options for e in entries(text)}


def _bootloader(source_root: Path) -> BootloaderRecord:
    for config in ("boot/extlinux/extlinux.conf", "boot/syslinux/syslinux.cfg", "extlinux.conf"):
        if (source_root / config).is_file():
            return BootloaderRecord(kind="extlinux", config="/" + config)
    if (source_root / "boot/grub/grub.cfg").is_file():
        return BootloaderRecord(kind="grub", config="/boot/grub/grub.cfg")
    return BootloaderRecord()


def _staged_fat(device: str) -> bool:
    """A tmpfs whose source is a FAT partition: a FAT staged where the kernel has no vfat."""
    return device.startswith("/dev/") and probe_filesystem(device).get("TYPE") == "vfat"


def _mounts_under(source_root: Path) -> list[tuple[str, Volume]]:
    """(mount point as the source saw it, volume) for block filesystems at or below the source root."""
    root = os.path.realpath(source_root)
    found = []
    for volume in list_volumes(with_uuid=False):
        if volume.fstype == STAGED and _staged_fat(volume.device):  # disk/fat_mount.py
            volume = msgspec.structs.replace(volume, fstype="vfat")
        if volume.fstype not in BLOCK_FILESYSTEMS or not volume.device.startswith("/dev/"):
            continue
        if volume.root != "/":
            continue  # a bind mount or subvolume of something recorded elsewhere
        where = volume.mount_point
        if where == root:
            found.append(("/", volume))
        elif is_within(where, root):
            found.append(("/" + where[len(root) :].strip("/"), volume))
    return found


def record_layout(source_root: Path) -> DiskLayout | None:
    """The layout of the disk holding the source root's "/", or None when it cannot be read.

    Never fails a backup: a root that is not a mounted block filesystem (a directory tree, a
    container) simply has no layout, and recover then needs --layout.
    """
    try:
        return _record(source_root)
    except (OSError, ShadowvaultError, ValueError) as err:
        log.info("no disk layout recorded for %s: %s", source_root, err)
        return None


def _record(source_root: Path) -> DiskLayout | None:
    mounts = _mounts_under(source_root)
    root_mount = next((v for where, v in mounts if where == "/"), None)
    if root_mount is None:
        return None
    located = disk_and_offset(root_mount.device)
    if located is None:
        return None
    disk = located[0]
    layout = _table_record(disk)
    if layout is None:
        log.info("%s has no MBR or GPT partition table: no layout recorded", disk)
        return None
    layout.disk_size = os.stat(disk).st_size if os.path.isfile(disk) else _device_size(disk)
    layout.bootloader = _bootloader(source_root)
    options = _fstab_options(source_root)
    for where, volume in sorted(mounts, key=lambda m: m[0]):
        place = disk_and_offset(volume.device)
        if place is None or place[0] != disk:
            log.info("%s is on another disk than the root: not part of the layout", where)
            continue
        number = next((p.number for p in layout.partitions if p.start == place[1]), None)
        if number is None:
            log.info("%s is at no partition of %s: not part of the layout", where, disk)
            continue
        facts = probe_filesystem(volume.device)
        stats = os.statvfs(volume.mount_point)
        layout.filesystems.append(
            FilesystemRecord(
                mount_point=where,
                fstype=facts.get("TYPE", volume.fstype),
                uuid=facts.get("UUID", ""),
                label=facts.get("LABEL", ""),
                partition=number,
                size=place[2],
                used=(stats.f_blocks - stats.f_bfree) * stats.f_frsize,
                options=options.get(where, "defaults"),
            )
        )
    return layout


def _table_record(disk: str) -> DiskLayout | None:
    """The layout's table part (kind, disk identity, partitions) of a GPT or MBR disk."""
    sector = gpt.sector_size(disk)
    found = gpt.read_gpt(disk, sector)
    if found is not None:
        return DiskLayout(
            table="gpt",
            disk_guid=found.disk_guid,
            partitions=[
                PartitionRecord(
                    number=p.number,
                    start=p.start,
                    size=p.size,
                    type_guid=p.type_guid,
                    uuid=p.uuid,
                    name=p.name,
                    attributes=p.attributes,
                )
                for p in found.partitions
            ],
        )
    table = read_table(disk)
    if table is None:
        return None
    return DiskLayout(
        disk_signature=table.disk_signature,
        partitions=[
            PartitionRecord(
                number=p.number, start=p.start, size=p.size, type_id=p.type_id, bootable=p.bootable
            )
            for p in table.partitions
        ],
    )


def _device_size(device: str) -> int:
    try:
        return int(proc.output(["blockdev", "--getsize64", device], timeout=10).strip())
    except (CommandError, ValueError):
        return 0


def layout_documents(source_root: Path) -> dict[str, bytes]:
    """{"disk-layout.json": ...} for system-state's documents, or nothing when there is no layout."""
    layout = record_layout(source_root)
    return {DOCUMENT: encode_layout(layout)} if layout is not None else {}
