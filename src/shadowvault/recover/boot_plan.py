"""Which bootloader steps a recovery takes: extlinux or GRUB for BIOS, GRUB or a kept loader for UEFI.

An MBR disk boots the way the source did: extlinux (syslinux's mbr.bin), or GRUB with core.img in
the gap after the MBR, or UEFI from an EFI system partition (uefi.py). A GPT disk boots by UEFI
from its ESP, or by BIOS (legacy) GRUB: GPT leaves no gap after the MBR (its entries follow the
header), so a BIOS-booted GPT disk has a small partition without a filesystem, the **BIOS boot
partition** (type 21686148-6449-6e6f-744e-656564454649), into which grub-install puts core.img.
It is recreated like every recorded partition (without a filesystem it keeps its size on a smaller
disk), and the recovered system's grub-install --target=i386-pc fills it (grub.py).

Hybrid disks (Debian's and Ubuntu's cloud images: a BIOS boot partition and an ESP, GRUB for both
platforms) get both installs when the snapshot holds both GRUB platforms, so the recovered disk
boots with either firmware, as the source's did: nothing recover can see tells which firmware
the new machine has. A GPT disk holding only one of the two gets that one; with neither, the plan
warns. BIOS GRUB on GPT is installed only when the snapshot has GRUB's i386-pc installer (the
source booted by BIOS, or was prepared to): a UEFI-only source with a leftover BIOS boot partition
gets no warning about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shadowvault.components.plan import Plan
from shadowvault.disk import gpt
from shadowvault.disk.layout import DiskLayout, PartitionRecord
from shadowvault.recover import uefi


@dataclass(frozen=True)
class BootSteps:
    """What apply.py installs: extlinux (MBR), BIOS GRUB (MBR or GPT), the UEFI choice (uefi.py)."""

    install_extlinux: bool = False
    install_grub: bool = False
    efi_boot: str = ""


def bios_boot_partition(layout: DiskLayout) -> PartitionRecord | None:
    """The GPT layout's BIOS boot partition (GRUB's core.img goes there), if it has one."""
    if layout.table != "gpt":
        return None
    return next((p for p in layout.partitions if p.type_guid.lower() == gpt.BIOS_BOOT_TYPE), None)


def bios_grub_possible(layout: DiskLayout, efi_boot: str) -> bool:
    """Whether the layout could take BIOS GRUB (so the snapshot is worth asking for its installer):
    an MBR disk without an ESP step, or a GPT disk with a BIOS boot partition."""
    if layout.bootloader.kind != "grub":
        return False
    return bios_boot_partition(layout) is not None if layout.table == "gpt" else not efi_boot


def _grub_missing_warning(grub_missing: Sequence[str]) -> str:
    return (
        f"GRUB is not installed by recover (the snapshot lacks {', '.join(grub_missing)}): "
        "run grub-install in the recovered system (docs/recover.md)"
    )


def _bios_grub_on_gpt(layout: DiskLayout, grub_missing: Sequence[str]) -> bool:
    return bios_boot_partition(layout) is not None and layout.bootloader.kind == "grub" and not grub_missing


def _plan_gpt_bios(plan: Plan, layout: DiskLayout, grub_missing: Sequence[str], has_esp: bool) -> bool:
    """The BIOS part of a GPT disk's boot; True when BIOS GRUB is to be installed."""
    bios_part = bios_boot_partition(layout)
    kind = layout.bootloader.kind
    if bios_part is not None and _bios_grub_on_gpt(layout, grub_missing):
        plan.add(
            "install",
            "boot",
            "grub",
            "the recovered system's grub-install --target=i386-pc --modules=part_gpt (chroot): "
            f"boot.img into the protective MBR, core.img into the BIOS boot partition "
            f"#{bios_part.number}; its grub.cfg kept",
        )
        return True
    if has_esp:
        return False  # UEFI boots it (uefi.plan_boot said how, or warned)
    if bios_part is None:
        plan.warn(
            "a GPT disk without an EFI system partition or a BIOS boot partition: recover installs "
            "no bootloader, so the disk will not boot on its own (install one in the recovered system)"
        )
    elif kind == "grub":
        plan.warn(_grub_missing_warning(grub_missing))
    else:
        plan.warn(
            f"the source's bootloader ({kind}) on a GPT disk: recover installs only GRUB into a BIOS "
            "boot partition, so the disk will not boot on its own (install one in the recovered system)"
        )
    return False


def plan_boot(
    plan: Plan, layout: DiskLayout, *, grub_missing: Sequence[str] = (), efi_boot: str = ""
) -> BootSteps:
    """Add the bootloader steps (or the warnings) to `plan` (`grub_missing`: what the snapshot lacks
    of GRUB's BIOS installer; `efi_boot`: uefi.choose_boot's answer)."""
    has_esp = uefi.esp_of(layout) is not None
    if layout.table == "gpt":
        if has_esp:
            uefi.plan_boot(plan, layout, efi_boot, bios_boots=_bios_grub_on_gpt(layout, grub_missing))
        install = _plan_gpt_bios(plan, layout, grub_missing, has_esp)
        return BootSteps(install_grub=install, efi_boot=efi_boot if has_esp else "")
    if has_esp:
        uefi.plan_boot(plan, layout, efi_boot)
        return BootSteps(efi_boot=efi_boot)
    boot = layout.bootloader
    if boot.kind == "extlinux":
        plan.add(
            "install",
            "boot",
            "extlinux",
            f"into {boot.config.rsplit('/', 1)[0]}, syslinux mbr.bin into the MBR",
        )
        return BootSteps(install_extlinux=True)
    if boot.kind == "grub" and not grub_missing:
        plan.add(
            "install",
            "boot",
            "grub",
            "the recovered system's grub-install --target=i386-pc (chroot): boot.img into the MBR, "
            "core.img after it; its grub.cfg kept",
        )
        return BootSteps(install_grub=True)
    if boot.kind == "grub":
        plan.warn(_grub_missing_warning(grub_missing))
    else:
        plan.warn("the source had no bootloader recover knows: the disk will not boot on its own")
    return BootSteps()
