"""Bare-metal recovery of a GPT machine that boots by BIOS, proven by booting with SeaBIOS: the hybrid
source disk of Debian's cloud images (BIOS boot partition + ESP + ext4 root + ext4 /srv/archive,
GRUB for both platforms; tests/recover/hybrid_machine.py) is backed up from its mounted partitions
and recovered onto a smaller empty image. recover recreates the BIOS boot partition as recorded and
runs the recovered system's grub-install --target=i386-pc (core.img into that partition, boot.img
into the protective MBR) and its x86_64-efi one (the removable-media path); the disk then boots
under QEMU/TCG with SeaBIOS, QEMU's default firmware, through GRUB to the login prompt, and with
OVMF (empty NVRAM) as well."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.disk import gpt
from tests.fixtures.boot_disk import GRUB_MARKER, OVMF_CODE, OVMF_VARS
from tests.inprocess_cli import json_out, run
from tests.recover.efi_machine import fat_listing
from tests.recover.hybrid_machine import BIOS_BOOT_PART, DISK_GUID, ESP_PART, TABLE
from tests.recover.machine import (
    ARCHIVE_NOTE,
    ROOT_UUID,
    Backup,
    attached,
    backed_up_machine,
    boot_until_login,
    probe_facts,
    recover_onto,
)

pytestmark = pytest.mark.lab  # builds a machine and boots its recovered disk (make test-lab)

MIB = 1 << 20
TARGET_SIZE = 768 * MIB  # smaller than the source's 1 GiB: the data fits


@pytest.fixture(scope="module")
def hybrid_backup() -> Iterator[Backup]:
    """The hybrid GPT source machine built, backed up from its mounted image, and taken apart again."""
    missing = [str(p) for p in (OVMF_CODE, OVMF_VARS) if not p.is_file()]
    if missing:
        pytest.fail(f"missing UEFI firmware {', '.join(missing)} (install the ovmf package)")
    with backed_up_machine("grub-hybrid") as built:
        yield built


@pytest.fixture(scope="module")
def recovered(hybrid_backup: Backup) -> Iterator[tuple[Path, dict]]:
    """The hybrid machine recovered onto a smaller empty image; (the image, the dry run's plan)."""
    target = hybrid_backup.directory / "target.img"
    with open(target, "wb") as f:
        f.truncate(TARGET_SIZE)
    plan = json_out(
        run(hybrid_backup.env, "recover", "--disk", target, hybrid_backup.snapshot, "--dry-run", "--json")
    )
    assert isinstance(plan, dict)
    with open(target, "rb") as f:
        assert f.read(MIB) == bytes(MIB)  # the dry run wrote nothing
    done = recover_onto(hybrid_backup, target)
    assert done.summary["errors"] == [] and done.summary["warnings"] == [], done.summary
    assert done.mounts_left == []  # the binds are gone
    yield target, plan


def _check_console(console: str, backup: Backup) -> None:
    assert GRUB_MARKER in console, console
    facts = probe_facts(console)
    assert facts["target"] == "active", console
    assert "(alice)" in facts["id"] and "(devs)" in facts["id"], console
    assert facts["probe-app"] == "enabled active", console
    assert facts["hello"].endswith("Hello, world!"), console
    assert facts["data"] == backup.data_sha256, console
    assert facts["archive"] == f"{ARCHIVE_NOTE.strip()} svarchive", console
    assert facts["root"] == ROOT_UUID, console
    assert "sourcebox login:" in console, console


def test_the_plan_installs_grub_for_bios_and_for_uefi(recovered: tuple[Path, dict]) -> None:
    target, plan = recovered
    actions = {(a["verb"], a["kind"], a["target"]): a["reason"] for a in plan["actions"]}
    bios_boot = actions[("create", "partition", f"{target} #14")]
    assert bios_boot.startswith("1-4 MiB (3 MiB), type BIOS boot, PARTUUID " + BIOS_BOOT_PART.uuid), bios_boot
    bios = actions[("install", "boot", "grub")]
    assert "--target=i386-pc --modules=part_gpt" in bios and "BIOS boot partition #14" in bios, bios
    assert "--removable --no-nvram" in actions[("install", "boot", "grub-efi")]
    assert not any(kind == "fs" and "#14" in why for (_, kind, _), why in actions.items())  # no mkfs on it
    assert plan["warnings"] == [
        "the target disk is smaller than the source's (1024 MiB): partitions shrunk"
    ], plan["warnings"]


def test_recover_of_a_bios_gpt_machine_boots_with_seabios(
    hybrid_backup: Backup, recovered: tuple[Path, dict]
) -> None:
    target, _ = recovered
    assert subprocess.run(["losetup", "-j", str(target)], capture_output=True, text=True).stdout == ""
    table = gpt.read_gpt(str(target))
    assert table is not None and table.disk_guid == DISK_GUID
    kept = {p.number: (p.type_guid, p.uuid, p.name) for p in table.partitions}
    assert kept == {p.number: (p.type_guid, p.uuid, p.name) for p in TABLE.partitions}
    by_number = {p.number: p for p in table.partitions}
    place = (by_number[14].start, by_number[14].size)
    assert place == (BIOS_BOOT_PART.start, BIOS_BOOT_PART.size)  # recreated as recorded
    assert by_number[15].size == ESP_PART.size
    with open(target, "rb") as f:
        mbr = f.read(512)
        f.seek(BIOS_BOOT_PART.start)
        core = f.read(BIOS_BOOT_PART.size)
    assert b"GRUB" in mbr[:440] and mbr[450] == gpt.PROTECTIVE and mbr[510:] == b"\x55\xaa"
    assert core[:512] != bytes(512), "core.img is not in the BIOS boot partition"
    listed = subprocess.run(  # util-linux's GPT reader: the table is intact after grub-install
        ["partx", "-g", "-r", "-o", "NR,TYPE", str(target)], capture_output=True, text=True
    )
    assert f"14 {gpt.BIOS_BOOT_TYPE}" in listed.stdout.splitlines(), listed.stdout + listed.stderr
    with attached(target, by_number[15]) as esp_dev:
        listing = fat_listing(esp_dev)
    assert {"/EFI/BOOT/BOOTX64.EFI", "/EFI/debian/grubx64.efi"} <= set(listing), listing

    # no firmware given: QEMU's default, SeaBIOS, boots the protective MBR's boot.img
    console = boot_until_login(target, hybrid_backup.directory / "seabios.log")
    _check_console(console, hybrid_backup)


def test_the_recovered_hybrid_disk_boots_with_uefi_too(
    hybrid_backup: Backup, recovered: tuple[Path, dict]
) -> None:
    target, _ = recovered
    uefi_vars = hybrid_backup.directory / "OVMF_VARS.fd"  # a fresh, empty NVRAM: no boot entries
    shutil.copyfile(OVMF_VARS, uefi_vars)
    console = boot_until_login(target, hybrid_backup.directory / "ovmf.log", uefi_vars)
    _check_console(console, hybrid_backup)
