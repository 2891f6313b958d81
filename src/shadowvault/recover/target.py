"""The target disk of a recovery: an image file or a whole-disk block device, never one in use.

Recover writes only to the path it was given (and to loop devices it attaches to that path), so the
checks here are the guard: a block device that is a partition, is mounted, holds something (a
mapping, a loop device over it or over one of its partitions) or cannot be opened
exclusively is refused; so is an image file that a loop device already uses.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shadowvault.errors import NotFoundError, UsageError


@dataclass(frozen=True)
class TargetDisk:
    path: str
    size: int
    is_device: bool


def _loop_backings() -> Iterator[tuple[str, str]]:
    """(loop device, the file or device behind it) for every loop device set up on this machine."""
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            name = backing.read_text().strip()
        except OSError:
            continue
        yield "/dev/" + backing.parent.parent.name, name


def _loop_users(image: str) -> list[str]:
    """Loop devices whose backing file is `image`."""
    real = os.path.realpath(image)
    return [loop for loop, name in _loop_backings() if name.removesuffix(" (deleted)") == real]


def _device_number(path: str) -> str | None:
    """major:minor of `path` when it is a block device."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if stat.S_ISBLK(st.st_mode) else None


def _device_users(numbers: set[str]) -> list[str]:
    """Loop devices over the disk or one of its partitions: a loop device neither claims its backing
    device (the exclusive open succeeds) nor shows among its holders, and this project reaches
    partitions through loops at an offset, so a filesystem mounted that way is found only here."""
    return [loop for loop, name in _loop_backings() if _device_number(name) in numbers]


def _mounted_devices() -> set[str]:
    """major:minor of every mounted filesystem."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return {line.split()[2] for line in f if line.strip()}


def _check_device(path: str, st: os.stat_result) -> int:
    name = os.path.basename(os.path.realpath(path))
    block = Path("/sys/class/block") / name
    if (block / "partition").exists():
        raise UsageError(f"{path} is a partition: give the whole disk")
    numbers = {f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"}
    for child in block.iterdir() if block.is_dir() else []:
        if (child / "partition").exists():
            numbers.add((child / "dev").read_text().strip())
    if numbers & _mounted_devices():
        raise UsageError(f"{path} is mounted (it or one of its partitions): refusing to overwrite it")
    holders = [h.name for h in (block / "holders").iterdir()] if (block / "holders").is_dir() else []
    holders += _device_users(numbers)
    if holders:
        raise UsageError(f"{path} is in use by {', '.join(holders)}: refusing to overwrite it")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_EXCL)
    except OSError as err:
        if err.errno == errno.EBUSY:
            raise UsageError(f"{path} is in use: refusing to overwrite it") from None
        raise
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def check_target(path: str) -> TargetDisk:
    """The target as a TargetDisk, or a one-line refusal."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFoundError(
            f"target disk {path} does not exist (create an image with truncate -s SIZE)"
        ) from None
    if stat.S_ISBLK(st.st_mode):
        return TargetDisk(path, _check_device(path, st), is_device=True)
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path} is neither a disk image nor a block device")
    users = _loop_users(path)
    if users:
        raise UsageError(f"{path} is in use by {', '.join(users)}: refusing to overwrite it")
    return TargetDisk(os.path.abspath(path), st.st_size, is_device=False)
