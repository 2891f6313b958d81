"""The UEFI source machine of the GPT recovery test: the machine.py machine on a GPT disk.

Disk (GPT, written by recover's own table writer, with a fixed disk GUID and PARTUUIDs): partition 1
is the EFI system partition (vfat, volume id 5EED-0E51, label SVESP, mounted at /boot/efi),
partition 2 the root (ext4), partition 3 /srv/archive (ext4), named by PARTUUID in fstab and
carrying an attribute bit, so that a recovery that lost the PARTUUIDs or attributes shows. GRUB is
Debian's grub-efi-amd64 (from the debootstrap cache), installed the way Debian installs it on a
UEFI machine: `grub-install --target=x86_64-efi` into \\EFI\\debian on the ESP (here with
--no-nvram: this host is not the machine's firmware). There is no \\EFI\\BOOT\\BOOTX64.EFI, as on
a real Debian machine, so the recovered disk boots only if recover puts one there.

This host's kernel has no vfat: the ESP is staged there, as recover does (disk/fat_mount.py), and
read back with mtools. The ESP is `noauto` in fstab: the test image carries no kernel modules in
its root (the busybox initramfs holds the few it needs), and Debian's kernel has vfat as a module.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from shadowvault import proc
from shadowvault.disk import fat_mount
from shadowvault.disk.gpt import ESP_TYPE, LINUX_FS_TYPE, GptPartition, GptTable, write_gpt
from shadowvault.recover.grub import GRUB_INSTALL, install_grub, system_dirs_bound
from tests.recover.machine import (
    ARCHIVE_NOTE,
    ARCHIVE_UUID,
    DISK_SIZE,
    MIB,
    ROOT_UUID,
    SourceMachine,
    _sh,
    attached,
    install_machine,
    mounted,
)

DISK_GUID = "5eed0000-6a7b-4c8d-9e0f-00000000d15c"
ESP_VOLID = "5EED-0E51"
ESP_LABEL = "SVESP"
NO_AUTOMOUNT = 1 << 63  # GPT attribute bit 63 ("do not automount"), harmless to Linux
ESP_PART = GptPartition(
    1, 1 * MIB, 64 * MIB, ESP_TYPE, "5eed0001-6a7b-4c8d-9e0f-0000000000e5", "EFI System Partition"
)
ROOT_PART = GptPartition(
    2, 65 * MIB, 832 * MIB, LINUX_FS_TYPE, "5eed0002-6a7b-4c8d-9e0f-000000000002", "svroot"
)
ARCHIVE_PART = GptPartition(
    3, 897 * MIB, DISK_SIZE - 898 * MIB, LINUX_FS_TYPE, "5eed0003-6a7b-4c8d-9e0f-000000000003", "svarchive",
    NO_AUTOMOUNT,
)  # fmt: skip
TABLE = GptTable(DISK_GUID, (ESP_PART, ROOT_PART, ARCHIVE_PART))
ESP_NOTE = "kept on the EFI system partition\n"

FSTAB = f"""# <file system> <mount point> <type> <options> <dump> <pass>
UUID={ROOT_UUID}\t/\text4\terrors=remount-ro\t0\t1
UUID={ESP_VOLID}\t/boot/efi\tvfat\tnoauto,umask=0077\t0\t2
PARTUUID={ARCHIVE_PART.uuid}\t/srv/archive\text4\tnoauto,nodev\t0\t2
"""


def install_debian_grub_efi(root: Path) -> None:
    """Debian's own install of UEFI GRUB (into \\EFI\\debian), without touching this host's NVRAM."""
    os.sync()
    with system_dirs_bound(root):
        proc.run(
            ["chroot", str(root), GRUB_INSTALL, "--target=x86_64-efi", "--efi-directory=/boot/efi",
             "--no-nvram", "--modules=part_gpt"],
            timeout=600,
        )  # fmt: skip


@contextlib.contextmanager
def mounted_fat(device: str, where: Path, size: int) -> Iterator[fat_mount.Mounted]:
    """A just-made FAT mounted as recover mounts it (staged where the kernel has no vfat: call
    `flush` to write what was put there onto the FAT)."""
    where.mkdir(parents=True, exist_ok=True)
    fs = fat_mount.mount(device, where, "vfat", size)
    try:
        yield fs
    finally:
        fs.unmount()


def fat_listing(device: str) -> list[str]:
    """Every path on a FAT filesystem, read with mtools (no mount, whatever the kernel has)."""
    out = _sh("env", "MTOOLS_SKIP_CHECK=1", "mdir", "-/", "-b", "-i", device, "::/")
    return sorted(line.strip().removeprefix("::") for line in out.splitlines() if line.strip())


def fat_read(device: str, path: str) -> str:
    return _sh("env", "MTOOLS_SKIP_CHECK=1", "mtype", "-i", device, "::" + path)


def gpt_source_machine(directory: Path) -> contextlib.AbstractContextManager[tuple[SourceMachine, Path]]:
    """Build the GPT source disk in `directory` and yield it mounted (root at the path yielded)."""
    return built_gpt_machine(directory, TABLE, (ESP_PART, ROOT_PART, ARCHIVE_PART), FSTAB, "grub-efi")


@contextlib.contextmanager
def built_gpt_machine(
    directory: Path,
    table: GptTable,
    parts: tuple[GptPartition, GptPartition, GptPartition],
    fstab: str,
    bootloader: str,
    *,
    bios_grub: bool = False,
) -> Iterator[tuple[SourceMachine, Path]]:
    """A GPT source disk with `table`, its (ESP, root, archive) `parts` made and filled, UEFI GRUB
    installed (and BIOS GRUB into the table's BIOS boot partition with `bios_grub`), yielded mounted."""
    esp_part, root_part, archive_part = parts
    disk = directory / "source.img"
    with open(disk, "wb") as f:
        f.truncate(DISK_SIZE)
    write_gpt(str(disk), table, DISK_SIZE)
    with contextlib.ExitStack() as stack:
        esp_dev = stack.enter_context(attached(disk, esp_part))
        root_dev = stack.enter_context(attached(disk, root_part))
        archive_dev = stack.enter_context(attached(disk, archive_part))
        _sh("mkfs.vfat", "-i", ESP_VOLID.replace("-", ""), "-n", ESP_LABEL, esp_dev)
        _sh("mkfs.ext4", "-q", "-F", "-U", ROOT_UUID, "-L", "svroot", root_dev)
        _sh("mkfs.ext4", "-q", "-F", "-U", ARCHIVE_UUID, "-L", "svarchive", archive_dev)
        root = stack.enter_context(mounted(root_dev, directory / "source-root"))
        digest = install_machine(root, bootloader, fstab)
        esp = stack.enter_context(mounted_fat(esp_dev, root / "boot/efi", esp_part.size))
        (esp.where / "sv-note.txt").write_text(ESP_NOTE)
        archive = stack.enter_context(mounted(archive_dev, root / "srv/archive"))
        (archive / "notes.txt").write_text(ARCHIVE_NOTE)
        install_debian_grub_efi(root)
        esp.flush()
        if bios_grub:
            os.sync()
            install_grub(str(disk), root, is_device=False, table="gpt")  # core.img: the BIOS boot partition
        yield SourceMachine(disk, digest), root
