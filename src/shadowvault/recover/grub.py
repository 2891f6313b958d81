"""GRUB for BIOS (i386-pc) on the recovered disk, installed by the recovered system's own grub-install.

Why the recovered system's own: the core.img it builds matches the modules it copies into
/boot/grub/i386-pc and the grub.cfg the machine keeps, and the rescue system running recover needs
no GRUB of its own. It runs in a chroot of the recovered root (mounted in recover's private
directory) with /dev, /proc and /sys bound in, unbound again whatever happens. grub-install embeds
core.img in the gap after the MBR (on GPT, which has no such gap, in the BIOS boot partition:
boot_plan.py) and writes boot.img into the MBR's boot code (GPT's protective MBR), keeping the
partition table and the disk signature.

The table's module (`part_msdos`, `part_gpt`) is named explicitly: recover reaches each partition
through a loop device at an offset, which grub-probe takes for a whole disk without a table, so
grub-install would leave out the module core.img needs to find the root partition (by its UUID) on
the real disk at boot.

grub.cfg is not regenerated: the filesystems keep their UUIDs, so the source's grub.cfg (which finds
the root with `search --fs-uuid` and passes `root=UUID=`) still holds; an edited layout's new UUIDs
are substituted in it. grub-mkconfig would not help here anyway: over loop devices grub-probe names
the backing image file, which the chroot cannot see, and without udev (/dev/disk/by-uuid) it would
write `root=/dev/loopN` into the kernel command line.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from shadowvault import proc
from shadowvault.errors import CommandError

log = logging.getLogger(__name__)

GRUB_INSTALL = "/usr/sbin/grub-install"
BIOS_MODULES = "/usr/lib/grub/i386-pc"  # grub-pc-bin: what --target=i386-pc installs
BOUND = ("dev", "proc", "sys")
TABLE_MODULES = {"msdos": "part_msdos", "gpt": "part_gpt"}  # what core.img needs to read the table


def missing_parts(exists: Callable[[str], bool]) -> list[str]:
    """What a root lacks to install BIOS GRUB (`exists` answers for a path in that root: in the
    snapshot when planning, on the restored disk before installing)."""
    return [path for path in (GRUB_INSTALL, BIOS_MODULES) if not exists(path)]


def _unmount(where: Path) -> None:
    try:
        proc.run(["umount", str(where)], timeout=120)
    except CommandError as err:
        log.warning("could not unmount %s: %s", where, err)


@contextlib.contextmanager
def system_dirs_bound(root: Path) -> Iterator[Path]:
    """/dev, /proc and /sys of this system bound into `root` for a chroot; unbound in reverse order."""
    with contextlib.ExitStack() as stack:
        for name in BOUND:
            where = root / name
            where.mkdir(exist_ok=True)
            proc.run(["mount", "--bind", f"/{name}", str(where)], timeout=60)
            stack.callback(_unmount, where)
        yield root


@contextlib.contextmanager
def whole_disk_device(disk: str, is_device: bool) -> Iterator[str]:
    """A block device for the whole disk, visible in the chroot's /dev: the device itself, or a loop
    device over the image (attached here, detached here by its exact name)."""
    if is_device:
        yield disk
        return
    device = proc.output(["losetup", "--find", "--show", disk], timeout=60).strip()
    try:
        yield device
    finally:
        try:
            proc.run(["losetup", "-d", device], timeout=60)
        except CommandError as err:
            log.warning("could not detach %s: %s", device, err)


def install_grub(disk: str, root: Path, *, is_device: bool, table: str = "msdos") -> None:
    """The recovered root's grub-install (BIOS) onto `disk`, in a chroot of `root` (mounted);
    `table`: the disk's partition table kind (msdos, gpt)."""
    with whole_disk_device(disk, is_device) as device, system_dirs_bound(root):
        proc.run(
            [
                "chroot",
                str(root),
                GRUB_INSTALL,
                "--target=i386-pc",
                f"--modules={TABLE_MODULES[table]}",
                device,
            ],
            timeout=600,
        )
