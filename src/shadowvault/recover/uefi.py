"""UEFI boot of the recovered disk: a loader at the firmware's removable-media path on the ESP.

A new machine's firmware has no NVRAM boot entry for the recovered disk (the source's entry lived in
the old machine's NVRAM), but every UEFI firmware boots \\EFI\\BOOT\\BOOTX64.EFI from an EFI system
partition it finds. So recover puts GRUB there: the recovered system's own `grub-install
--target=x86_64-efi --removable --no-nvram`, run in a chroot like BIOS GRUB (grub.py), its core
image matching the modules and the grub.cfg the machine keeps. A machine without grub-efi whose ESP
already holds that loader (restored with the ESP's files) keeps it; otherwise the plan warns.
No NVRAM entry is written: recover may run on a rescue system that is not the target's firmware.

`part_gpt` (`part_msdos` for an MBR disk's ESP) is named for the same reason as in grub.py: over a
loop device at an offset grub-probe sees no partition table, and core.img would lack the module it
needs to find the root by UUID at boot.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from shadowvault import proc
from shadowvault.components.plan import Plan
from shadowvault.disk import gpt
from shadowvault.disk.layout import DiskLayout, FilesystemRecord
from shadowvault.recover.grub import GRUB_INSTALL, system_dirs_bound

EFI_MODULES = "/usr/lib/grub/x86_64-efi"  # grub-efi-amd64-bin: what --target=x86_64-efi installs
MBR_ESP_TYPE = 0xEF
# FAT ignores case; these are the spellings loaders are written with
REMOVABLE_LOADERS = (
    "EFI/BOOT/BOOTX64.EFI",
    "EFI/BOOT/bootx64.efi",
    "efi/boot/bootx64.efi",
    "EFI/Boot/bootx64.efi",
)
GRUB_INSTALL_ARGS = ("--target=x86_64-efi", "--removable", "--no-nvram")
LOADER_TEXT = "\\EFI\\BOOT\\BOOTX64.EFI"
GRUB = "grub-install"  # the choices of choose_boot
KEEP = "keep"
MISSING = "missing"


def esp_of(layout: DiskLayout) -> FilesystemRecord | None:
    """The recorded vfat filesystem on the EFI system partition (GPT type or MBR type 0xEF), if any."""
    esp_numbers = {
        p.number
        for p in layout.partitions
        if (layout.table == "gpt" and p.type_guid.lower() == gpt.ESP_TYPE)
        or (layout.table == "msdos" and p.type_id == MBR_ESP_TYPE)
    }
    found = [f for f in layout.filesystems if f.partition in esp_numbers and f.fstype == "vfat"]
    return min(found, key=lambda f: len(f.mount_point)) if found else None


def grub_efi_missing(exists: Callable[[str], bool]) -> list[str]:
    """What a root lacks to install UEFI GRUB (`exists` answers for a path in that root)."""
    return [path for path in (GRUB_INSTALL, EFI_MODULES) if not exists(path)]


def removable_loader(esp_mount: str, exists: Callable[[str], bool]) -> str | None:
    """The path of \\EFI\\BOOT\\BOOTX64.EFI under the ESP's mount point, if the root has it."""
    base = esp_mount.rstrip("/")
    return next((f"{base}/{p}" for p in REMOVABLE_LOADERS if exists(f"{base}/{p}")), None)


def choose_boot(layout: DiskLayout, exists: Callable[[str], bool]) -> str:
    """How the recovered disk becomes bootable by UEFI: GRUB, KEEP, MISSING ("" without an ESP)."""
    esp = esp_of(layout)
    if esp is None:
        return ""
    if layout.bootloader.kind == "grub" and not grub_efi_missing(exists):
        return GRUB
    return KEEP if removable_loader(esp.mount_point, exists) else MISSING


def plan_boot(plan: Plan, layout: DiskLayout, choice: str, *, bios_boots: bool = False) -> None:
    """The UEFI step of the plan (`bios_boots`: BIOS GRUB is installed too, boot_plan.py)."""
    esp = esp_of(layout)
    assert esp is not None
    if choice == GRUB:
        plan.add(
            "install",
            "boot",
            "grub-efi",
            f"the recovered system's grub-install --target=x86_64-efi --efi-directory={esp.mount_point} "
            f"--removable --no-nvram (chroot): {LOADER_TEXT} on the ESP; its grub.cfg kept",
        )
    elif choice == KEEP:
        plan.add("leave", "boot", LOADER_TEXT, "restored onto the ESP: the firmware's removable-media path")
    else:
        outcome = (
            "UEFI firmware will find nothing to boot (BIOS firmware boots the disk through GRUB)"
            if bios_boots
            else "the firmware will find nothing to boot"
        )
        plan.warn(
            f"UEFI: the snapshot has neither GRUB for x86_64-efi ({GRUB_INSTALL}, {EFI_MODULES}) nor "
            f"{LOADER_TEXT} on its ESP ({esp.mount_point}): {outcome}; "
            "install a bootloader on the ESP (docs/recover.md)"
        )


def install_grub_efi(root: Path, layout: DiskLayout) -> None:
    """The recovered root's grub-install (x86_64-efi, removable path, no NVRAM), in a chroot of
    `root` with the ESP mounted at its place."""
    esp = esp_of(layout)
    assert esp is not None
    modules = "part_gpt" if layout.table == "gpt" else "part_msdos"
    with system_dirs_bound(root):
        proc.run(
            [
                "chroot",
                str(root),
                GRUB_INSTALL,
                *GRUB_INSTALL_ARGS,
                f"--efi-directory={esp.mount_point}",
                f"--modules={modules}",
            ],
            timeout=600,
        )


def finish_boot(root: Path, layout: DiskLayout, choice: str) -> list[str]:
    """Carry out the planned UEFI step on the restored root (mounted); returns warnings."""
    esp = esp_of(layout)
    if esp is None or choice == MISSING:
        return []

    def on_disk(path: str) -> bool:
        return (root / path.lstrip("/")).exists()

    if choice == GRUB:
        missing = grub_efi_missing(on_disk)
        if missing:
            return [
                f"GRUB was not installed (the recovered system lacks {', '.join(missing)}): "
                "run grub-install in the recovered system (docs/recover.md)"
            ]
        install_grub_efi(root, layout)
    if removable_loader(esp.mount_point, on_disk) is None:
        return [f"{LOADER_TEXT} is not on the recovered ESP: the firmware will find nothing to boot"]
    return []
