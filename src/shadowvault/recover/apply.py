"""Carrying out a recovery plan: table, loop devices per partition, filesystems, restores, fixes, boot.

Each partition is reached through its own loop device at the partition's offset (`losetup -o
--sizelimit`), attached here and detached here by its exact name, whatever fails; the filesystems
are mounted in a private temporary directory, root first, and unmounted in reverse order. The
files component is restored first: the account files alone (so that the target is a machine root
whose accounts are the source's, and owners keep their numbers), then the whole tree; then
system-state over it (accounts, /etc merge rules, unit states); all through the component restore
job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shadowvault import proc
from shadowvault.components.base import RESERVED_DIR, RestoreOptions
from shadowvault.components.layout import resolve_in_root
from shadowvault.components.plan import Plan
from shadowvault.disk import fat_mount
from shadowvault.disk.layout import DiskLayout
from shadowvault.errors import CommandError
from shadowvault.fsutil import atomic_write
from shadowvault.jobs.restore_component import restore_component
from shadowvault.recover import bootloader, fixes, grub, tables, uefi
from shadowvault.recover.plan import COMPONENTS, FilesystemStep
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot

log = logging.getLogger(__name__)

# laid down first, so that the whole tree's owners map by name onto the source's own accounts
ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")


@dataclass
class RecoverReport:
    """What was done, what failed along the way, and how long each phase took (seconds)."""

    plan: Plan
    applied: bool
    errors: list[tuple[str, str]] = field(default_factory=list)
    fstab_notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _attach(disk: str, start: int, size: int) -> str:
    out = proc.output(
        ["losetup", "--find", "--show", "-o", str(start), "--sizelimit", str(size), disk], timeout=60
    )
    return out.strip()


def _detach(device: str) -> None:
    try:
        proc.run(["losetup", "-d", device], timeout=60)
    except CommandError as err:
        log.warning("could not detach %s: %s", device, err)


def _mkfs_argv(step: FilesystemStep, device: str) -> list[str]:
    record = step.record
    label = record.label
    if record.fstype in ("ext2", "ext3", "ext4"):
        argv = [f"mkfs.{record.fstype}", "-q", "-F", "-U", record.uuid]
        return argv + (["-L", label] if label else []) + [device]
    if record.fstype == "xfs":
        return [
            "mkfs.xfs",
            "-q",
            "-f",
            "-m",
            f"uuid={record.uuid}",
            *(["-L", label] if label else []),
            device,
        ]
    if record.fstype == "btrfs":
        return ["mkfs.btrfs", "-q", "-f", "-U", record.uuid, *(["-L", label] if label else []), device]
    serial = record.uuid.replace("-", "")
    return ["mkfs.vfat", "-i", serial, *(["-n", label] if label else []), device]


def _quietly(unmount: Callable[[], None], where: Path) -> None:
    try:
        unmount()
    except CommandError as err:
        log.warning("could not unmount %s: %s", where, err)


def _install_bootloader(plan: Plan, mnt: Path, report: RecoverReport) -> None:
    """The recorded bootloader onto the disk, its configuration following an edited layout's UUIDs."""
    boot = plan.data["layout"].bootloader
    # inside the recovered root: a restored symlink (/boot -> /somewhere) must not lead to this machine
    config = resolve_in_root(mnt, boot.config) if boot.config else mnt
    changes = plan.data.get("uuid_changes")
    if (
        boot.kind in ("extlinux", "grub") and changes and config.is_file() and not config.is_symlink()
    ):  # root=UUID=... of an edited layout
        text = config.read_text(errors="replace")
        atomic_write(config, bootloader.replace_uuids(text, changes).encode(), mode=0o644)
    layout: DiskLayout = plan.data["layout"]
    if plan.data.get("efi_boot"):
        os.sync()
        report.warnings += uefi.finish_boot(mnt, layout, plan.data["efi_boot"])
    if plan.data.get("install_extlinux"):
        if not config.is_file() or config.is_symlink():
            report.warnings.append(
                f"extlinux was not installed: {boot.config} is not a file on the recovered disk "
                "(install a bootloader in the recovered system)"
            )
        else:
            bootloader.install_extlinux(plan.target_root, config.parent)
    if plan.data.get("install_grub"):  # BIOS; on a hybrid GPT disk as well as UEFI's
        missing = grub.missing_parts(lambda path: (mnt / path.lstrip("/")).exists())
        if missing:
            report.warnings.append(
                f"GRUB was not installed (the recovered system lacks {', '.join(missing)}): "
                "run grub-install in the recovered system (docs/recover.md)"
            )
            return
        os.sync()  # grub-install reads the root filesystem through its device
        grub.install_grub(plan.target_root, mnt, is_device=plan.data["is_device"], table=layout.table)


def apply_plan(
    plan: Plan,
    repo: Repository,
    snapshot_id: str,
    snapshot: Snapshot,
    *,
    new_machine_id: bool,
    on_phase: Callable[[str], None] | None = None,
) -> RecoverReport:
    """Rebuild the disk `plan.target_root` as planned; returns the report."""
    disk = plan.target_root
    layout: DiskLayout = plan.data["layout"]
    steps: list[FilesystemStep] = plan.data["filesystems"]
    table: tables.PlannedTable = plan.data["table"]
    report = RecoverReport(plan, applied=True)
    clock = time.monotonic()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        report.timings[name] = report.timings.get(name, 0.0) + now - clock
        clock = now
        if on_phase is not None:
            on_phase(name)

    with contextlib.ExitStack() as cleanup:
        tables.write_planned_table(disk, table, plan.data["disk_size"])
        devices = {}
        for step in steps:
            device = _attach(disk, step.partition.start, step.partition.size)
            cleanup.callback(_detach, device)
            devices[step.record.mount_point] = device
            proc.run(_mkfs_argv(step, device), timeout=600)
        mnt = Path(tempfile.mkdtemp(prefix="shadowvault-recover-"))
        cleanup.callback(shutil.rmtree, mnt, True)
        mounted: list[fat_mount.Mounted] = []
        for step in steps:  # parents first (the plan sorted them)
            where = mnt / step.record.mount_point.lstrip("/")
            where.mkdir(parents=True, exist_ok=True)
            fs = fat_mount.mount(
                devices[step.record.mount_point], where, step.record.fstype, step.partition.size
            )
            cleanup.callback(_quietly, fs.unmount, where)
            mounted.append(fs)
        phase("partition")
        for name, includes in (("files", ACCOUNT_FILES), *((name, []) for name in COMPONENTS)):
            options = RestoreOptions(
                target_root=mnt,
                overwrite=True,
                install_packages=False,  # the files component laid the packages down already
                includes=list(includes),
                excludes=[f"/{RESERVED_DIR}"],
            )
            done = restore_component(repo, snapshot_id, snapshot, name, options)
            report.errors += [(f"{name}: {what}", why) for what, why in done.errors]
        phase("restore")
        report.fstab_notes = fixes.fix_fstab(mnt, layout.filesystems)
        if new_machine_id:
            fixes.reset_machine_id(mnt)
        phase("fixes")
        _install_bootloader(plan, mnt, report)
        for fs in mounted:
            fs.flush()  # a staged FAT onto its partition (disk/fat_mount.py)
        os.sync()
        phase("bootloader")
    return report
