"""Loop filesystems for benchmarks: the data set and the repositories never touch the root filesystem.

A filesystem image (sparse) is bound with `losetup --find --show`, mounted on a fresh temporary
directory, and always torn down: unmounted and exactly that loop device detached. A temporary image
is deleted afterwards; an image the caller names (to reuse a data set) is kept and re-mounted next time.

The loop device does direct I/O on its image where the kernel lets it, as a disk does: buffered,
every block read or written went through the image file's page cache as well and was copied by the
loop's kernel thread (perf, 1M-file first backup on 2 CPUs: a fifth of all CPU time, in that
thread's memcpy, taken from the tools measured and the floors alike).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

FITHAW = 0xC0045878
MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"],
    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
}
MIN_SIZE = {"ext4": 64 << 20, "xfs": 320 << 20, "btrfs": 128 << 20}


def sh(*argv: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def free_bytes(path: str | Path) -> int:
    """Free bytes for an unprivileged writer on the filesystem holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _thaw_quietly(mount: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with contextlib.suppress(OSError):
                fcntl.ioctl(fd, FITHAW, 0)
        finally:
            os.close(fd)


def attach(image: Path) -> str:
    """A loop device for `image`, doing direct I/O where the kernel allows it (else buffered)."""
    direct = sh("losetup", "--find", "--show", "--direct-io=on", str(image), check=False)
    if direct.returncode == 0:
        return direct.stdout.strip()
    return sh("losetup", "--find", "--show", str(image)).stdout.strip()


@contextlib.contextmanager
def loop_filesystem(
    fstype: str, size: int, *, image: Path | None = None, base: str | None = None, inodes: int = 0
) -> Iterator[Path]:
    """Yield the mount point of a `fstype` filesystem of `size` bytes on its own loop device.

    With `image` set, that image is reused when it exists (no mkfs) and kept afterwards. `inodes`
    is a floor for ext4's inode count (fixed at mkfs: one per 16 KiB by default, too few for a
    million small files); xfs allocates inodes as it goes.
    """
    work = Path(tempfile.mkdtemp(prefix=f"sv-bench-{fstype}-", dir=base))
    mount = work / "mnt"
    keep = image is not None
    image = image if image is not None else work / "fs.img"
    device = ""
    try:
        fresh = not image.exists()
        if fresh:
            image.parent.mkdir(parents=True, exist_ok=True)
            with open(image, "wb") as f:
                f.truncate(max(size, MIN_SIZE[fstype]))
        device = attach(image)
        if fresh:
            more = fstype == "ext4" and inodes > size // 16384
            extra = ["-N", str(inodes)] if more else []
            sh(*MKFS[fstype], *extra, device, timeout=1800)
        mount.mkdir()
        sh("mount", device, str(mount))
        yield mount
    finally:
        if os.path.ismount(mount):
            _thaw_quietly(mount)
            for attempt in range(100):
                if sh("umount", str(mount), check=False).returncode == 0:
                    break
                if attempt == 99:
                    sh("umount", "-l", str(mount), check=False)
                time.sleep(0.1)
        if device:
            for _ in range(50):
                if sh("losetup", "-d", device, check=False).returncode == 0:
                    break
                time.sleep(0.1)
        if keep:
            with contextlib.suppress(OSError):
                mount.rmdir()
                work.rmdir()
        else:
            shutil.rmtree(work, ignore_errors=True)
