"""Installing the recorded bootloader on the recovered disk: extlinux (syslinux) and its MBR code.

`extlinux --install DIR` writes ldlinux.sys into the filesystem mounted at DIR's filesystem and
patches its volume boot record; syslinux's mbr.bin (440 bytes) goes into the disk's first sector,
before the partition table, and boots the partition marked active.
"""

from __future__ import annotations

from pathlib import Path

from shadowvault import proc
from shadowvault.disk.partition import write_boot_code
from shadowvault.errors import NotFoundError

MBR_CODE_PATHS = ("/usr/lib/EXTLINUX/mbr.bin", "/usr/lib/syslinux/mbr/mbr.bin")


def mbr_code() -> bytes:
    for path in MBR_CODE_PATHS:
        if Path(path).is_file():
            return Path(path).read_bytes()
    raise NotFoundError("syslinux's mbr.bin is missing (install extlinux and syslinux-common)")


def install_extlinux(disk: str, mounted_config_dir: Path) -> None:
    """extlinux into the directory holding extlinux.conf (mounted), then the MBR boot code."""
    code = mbr_code()
    proc.run(["extlinux", "--install", str(mounted_config_dir)], timeout=120)
    write_boot_code(disk, code)


def replace_uuids(text: str, changes: dict[str, str]) -> str:
    """`text` (a bootloader config, an fstab) with every old UUID replaced by its new one."""
    for old, new in changes.items():
        text = text.replace(old, new)
    return text
