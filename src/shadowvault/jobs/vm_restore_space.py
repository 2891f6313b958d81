"""Whether a VM restore fits on its filesystems, asked before it writes a byte.

A disk bigger than the free space used to fail part way through with "internal error: OSError:
[Errno 28]" after writing gigabytes. What each disk needs is known from its chunks (all-zero chunks
stay holes), so the restore is refused first, in one line. A qcow2 is made from a raw copy written
beside it (`qemu-img convert`), so while a disk is converted both are on disk at once; an in-place
restore keeps the images it replaces (set aside, not freed), so they do not count as free. A file
copied out of a disk (`--disk D --path P`) needs that disk laid down whole in a scratch directory
first (TMPDIR), which is checked the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from shadowvault.display import human_size
from shadowvault.jobs.restore_space import NoSpaceError, existing_ancestor, free_bytes
from shadowvault.repo.repository import Repository
from shadowvault.vm.layout import StoredDisk

QCOW2_SLACK = 1 << 20  # a qcow2's header and tables beyond one 8-byte entry per 4 KiB


def data_bytes(repo: Repository, disk: StoredDisk, content: list[bytes]) -> int:
    """The bytes a restore writes for `disk`: its chunks that are not the all-zero chunk."""
    zero_id = repo.blob_id(bytes(disk.chunk_size))
    return min(disk.virtual_size, sum(disk.chunk_size for blob_id in content if blob_id != zero_id))


def check_vm_fits(
    repo: Repository, vm: str, images: Iterable[tuple[str, StoredDisk, list[bytes], str]]
) -> None:
    """NoSpaceError when the images (path, disk, chunks, format) need more than the free space of a
    filesystem they go to: every image whole at the end, plus the largest raw copy a qcow2 is made
    from (the disks are converted one at a time)."""
    where: dict[int, str] = {}
    final: dict[int, int] = {}
    scratch: dict[int, int] = {}
    for path, disk, content, fmt in images:
        existing = existing_ancestor(os.path.dirname(path))
        dev = os.stat(existing).st_dev
        where.setdefault(dev, existing)
        data = data_bytes(repo, disk, content)
        size = data + disk.virtual_size // 4096 + QCOW2_SLACK if fmt == "qcow2" else data
        final[dev] = final.get(dev, 0) + size
        if fmt == "qcow2":
            scratch[dev] = max(scratch.get(dev, 0), data)
    for dev, needed in final.items():
        needed += scratch.get(dev, 0)
        free = free_bytes(where[dev])
        if needed > free:
            why = " (a qcow2 is converted from a raw copy beside it)" if scratch.get(dev) else ""
            raise NoSpaceError(
                f"not enough space to restore VM {vm}: its disks need {human_size(needed)} on the "
                f"filesystem of {where[dev]}{why}, which has {human_size(free)} free; nothing was written"
            )


def check_scratch_fits(
    repo: Repository, vm: str, disk: StoredDisk, content: list[bytes], scratch: str, path: str
) -> None:
    """NoSpaceError when disk `disk` (its chunks `content`), laid down raw in a scratch directory
    under `scratch` to copy `path` out of it, needs more than that filesystem has free."""
    needed = data_bytes(repo, disk, content)
    free = free_bytes(existing_ancestor(scratch))
    if needed > free:
        raise NoSpaceError(
            f"not enough space to copy {path} out of disk {disk.disk} of VM {vm}: the disk is laid "
            f"down first in a scratch directory under {scratch} (TMPDIR chooses it), which needs "
            f"{human_size(needed)} and has {human_size(free)} free; nothing was written"
        )
