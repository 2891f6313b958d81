"""The hybrid source machine of the BIOS-on-GPT recovery test: a GPT disk laid out like Debian's cloud
images, booting with BIOS (SeaBIOS) or UEFI firmware.

Disk (GPT, written by recover's own table writer): partition 14 is the BIOS boot partition (3 MiB
at 1 MiB, no filesystem: GRUB's core.img), partition 15 the EFI system partition (vfat at
/boot/efi), partition 1 the root (ext4), partition 2 /srv/archive (ext4); the numbers are Debian's
cloud images' own, out of order on the disk. GRUB is installed for both platforms, as there:
grub-pc (i386-pc, core.img into partition 14, boot.img into the protective MBR) and
grub-efi-amd64-bin (x86_64-efi into \\EFI\\debian, with --no-nvram, without the removable-media
path, so that the recovered disk boots with OVMF only if recover put one there).

The rest is machine.py's machine (account, unit, package, data, boot probe) and efi_machine.py's
staged ESP (this host's kernel has no vfat).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from shadowvault.disk.gpt import BIOS_BOOT_TYPE, ESP_TYPE, LINUX_FS_TYPE, GptPartition, GptTable
from tests.recover.efi_machine import ESP_VOLID, built_gpt_machine
from tests.recover.machine import (
    ARCHIVE_UUID,
    DISK_SIZE,
    MIB,
    ROOT_UUID,
    SourceMachine,
)

DISK_GUID = "5eed0000-6a7b-4c8d-9e0f-0000000b1050"
BIOS_BOOT_PART = GptPartition(
    14, 1 * MIB, 3 * MIB, BIOS_BOOT_TYPE, "5eed000e-6a7b-4c8d-9e0f-00000000b105", "BIOS boot"
)
ESP_PART = GptPartition(
    15, 4 * MIB, 64 * MIB, ESP_TYPE, "5eed000f-6a7b-4c8d-9e0f-0000000000e5", "EFI System Partition"
)
ROOT_PART = GptPartition(1, 68 * MIB, 829 * MIB, LINUX_FS_TYPE, "5eed0001-6a7b-4c8d-9e0f-000000000001")
ARCHIVE_PART = GptPartition(
    2, 897 * MIB, DISK_SIZE - 898 * MIB, LINUX_FS_TYPE, "5eed0002-6a7b-4c8d-9e0f-000000000002", "svarchive"
)
TABLE = GptTable(DISK_GUID, (ROOT_PART, ARCHIVE_PART, BIOS_BOOT_PART, ESP_PART))

FSTAB = f"""# <file system> <mount point> <type> <options> <dump> <pass>
UUID={ROOT_UUID}\t/\text4\terrors=remount-ro\t0\t1
UUID={ESP_VOLID}\t/boot/efi\tvfat\tnoauto,umask=0077\t0\t2
UUID={ARCHIVE_UUID}\t/srv/archive\text4\tnoauto,nodev\t0\t2
"""


def hybrid_source_machine(directory: Path) -> contextlib.AbstractContextManager[tuple[SourceMachine, Path]]:
    """Build the hybrid GPT source disk in `directory` and yield it mounted (root at the path yielded)."""
    parts = (ESP_PART, ROOT_PART, ARCHIVE_PART)
    return built_gpt_machine(directory, TABLE, parts, FSTAB, "grub-hybrid", bios_grub=True)
