"""Mounting a just-made filesystem of the recovered disk; FAT staged where the kernel has no vfat.

Rescue systems' kernels have vfat, and there the EFI system partition is mounted like any other
filesystem. Some kernels have none (minimal VM kernels such as Firecracker's, this project's CI
host), and recover onto an image file is still wanted there. Then the new FAT is staged: a tmpfs
(no larger than the partition) is mounted in its place with the partition's device as the mount's
source, the restore and grub-install write into it, and `flush` copies the tree onto the FAT with
mtools (`mcopy`, which image builders use to fill ESPs without mounting them). grub-install accepts
the staging directory because it finds the ESP's device in the mount table and reads the FAT on it
with its own driver. A FUSE FAT driver (fusefat) was tried and rejected: it lost directory entries
under a whole-tree restore and shows the volume label as a file. A kernel vfat mount gets `quiet`:
FAT stores no owners or modes, and without it the restore's chown/chmod of the ESP's files would
fail with EPERM whenever the recorded modes differ from what the mount shows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shadowvault import proc
from shadowvault.errors import UnsupportedError

STAGED = "tmpfs"  # the mount table's type of a staged FAT (its source is the FAT's device)
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}  # a loop device has no floppy geometry to check


def kernel_has(fstype: str) -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == fstype for line in f if line.strip())
    except OSError:
        return True  # cannot tell: let mount(8) answer


def needs_staging(fstype: str) -> bool:
    return fstype == "vfat" and not kernel_has("vfat")


def check_mountable(fstypes: set[str]) -> None:
    """Refuse, before anything is written, a filesystem this system can neither mount nor stage."""
    if "vfat" in fstypes and needs_staging("vfat") and not _have("mcopy"):
        raise UnsupportedError(
            "this kernel has no vfat (for the EFI system partition) and mtools is not installed: "
            "install mtools, or recover from a rescue system whose kernel has vfat"
        )


def _have(tool: str) -> bool:
    return any(os.access(Path(d) / tool, os.X_OK) for d in os.environ.get("PATH", "").split(":") if d)


@dataclass
class Mounted:
    """A mounted filesystem of the new disk; `flush` before unmounting when the work succeeded."""

    device: str
    where: Path
    staged: bool = False

    def flush(self) -> None:
        """A staged FAT's tree copied onto the FAT (nothing to do for a kernel mount)."""
        if not self.staged:
            return
        names = sorted(os.listdir(self.where))
        if names:
            argv = ["mcopy", "-i", self.device, "-s", "-m", "-o", "-Q"]
            files = [str(self.where / n) for n in names]
            proc.run([*argv, *files, "::/"], timeout=600, env={**os.environ, **MTOOLS_ENV})

    def unmount(self) -> None:
        proc.run(["umount", str(self.where)], timeout=120)


def mount(device: str, where: Path, fstype: str, size: int) -> Mounted:
    """Mount the just-made filesystem on `device` (`size` bytes) at `where`, staged if need be."""
    if not needs_staging(fstype):
        # vfat's `quiet`: the restore's chown/chmod succeed (FAT stores neither) instead of EPERM
        options = ["-o", "quiet"] if fstype == "vfat" else []
        proc.run(["mount", *options, device, str(where)], timeout=120)
        return Mounted(device, where)
    proc.run(["mount", "-t", "tmpfs", "-o", f"mode=0755,size={size}", device, str(where)], timeout=120)
    return Mounted(device, where, staged=True)
