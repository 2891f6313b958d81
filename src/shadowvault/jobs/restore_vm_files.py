"""Files from inside a VM's disk without restoring the VM: a read-only loop mount of the restored image.

The image is laid down sparse in a scratch directory (refused first if it does not fit there:
jobs/vm_restore_space.py), attached with `losetup --find --show --read-only` (at the first
partition's offset when the disk has an MBR: this kernel may have no partition support on loops),
mounted read-only without journal replay, and the wanted path is copied
out with its metadata. The loop device we got, and only that one, is detached in every case. A
disk the snapshot's backup left out (`--vm-disk`) comes from the newest earlier snapshot holding
it, as a whole-VM restore takes it (jobs/vm_sources.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from shadowvault import proc
from shadowvault.errors import NotFoundError, UsageError
from shadowvault.jobs.restore_vm import write_raw
from shadowvault.jobs.vm_restore_space import check_scratch_fits
from shadowvault.jobs.vm_sources import DiskSource, disk_sources
from shadowvault.repo.repository import Repository

SECTOR = 512
EXT_MAGIC_OFFSET = 1024 + 56


def filesystem_offset(image: str) -> int:
    """0 for a filesystem on the whole disk, else the first MBR partition's byte offset."""
    with open(image, "rb") as f:
        head = f.read(2048)
    if len(head) >= EXT_MAGIC_OFFSET + 2 and head[EXT_MAGIC_OFFSET : EXT_MAGIC_OFFSET + 2] == b"\x53\xef":
        return 0
    if head[510:512] == b"\x55\xaa":
        for slot in range(4):
            entry = head[446 + 16 * slot : 446 + 16 * (slot + 1)]
            kind, start = entry[4], struct.unpack("<I", entry[8:12])[0]
            if kind and start:
                return start * SECTOR
    return 0


@contextlib.contextmanager
def mounted_read_only(image: str) -> Iterator[str]:
    """The filesystem inside `image`, mounted read-only; unmounted and detached afterwards."""
    offset = filesystem_offset(image)
    argv = ["losetup", "--find", "--show", "--read-only", "--offset", str(offset), image]
    device = proc.output(argv).strip()
    try:
        mountpoint = tempfile.mkdtemp(prefix="sv-vm-disk-")
        try:
            kind = proc.output(["blkid", "-o", "value", "-s", "TYPE", device], check=False).strip()
            options = "ro,noload" if kind.startswith("ext") else ("ro,norecovery" if kind == "xfs" else "ro")
            proc.run(["mount", "-o", options, device, mountpoint])
            try:
                yield mountpoint
            finally:
                proc.run(["umount", mountpoint])
        finally:
            os.rmdir(mountpoint)
    finally:
        proc.run(["losetup", "-d", device])


@dataclass(frozen=True)
class PathRestored:
    """What a restore from inside a disk wrote, and the snapshot (id, time) the disk came from."""

    snapshot_id: str  # the snapshot asked for
    written: str
    source: tuple[str, float]  # an earlier snapshot when the one asked for left the disk out


def restore_disk_path(
    repo: Repository, snapshot: str, vm: str, disk: str, path: str, target: str
) -> PathRestored:
    """Copy `path` from inside VM `vm`'s disk `disk` into `target`. A disk the snapshot's backup
    left out comes from the newest earlier snapshot holding it (jobs/vm_sources.py)."""
    if not path.startswith("/"):
        raise UsageError("--path is a path inside the guest: give it from its root (/etc/hosts)")
    snapshot_id, snap = repo.find_snapshot(snapshot)
    _, [source] = disk_sources(repo, vm, snapshot_id, snap, [disk])
    written = _copy_out(repo, source, vm, path, target)
    return PathRestored(snapshot_id, written, (source.snapshot_id, source.time))


def _copy_out(repo: Repository, source: DiskSource, vm: str, path: str, target: str) -> str:
    """Lay the disk down in a scratch directory, mount it read-only, copy `path` out; what was written."""
    stored, disk = source.disk, source.disk.disk
    check_scratch_fits(repo, vm, stored, source.content, tempfile.gettempdir(), path)
    scratch = tempfile.mkdtemp(prefix="sv-vm-image-")
    try:
        image = os.path.join(scratch, f"{disk}.raw")
        write_raw(repo, source.content, stored.virtual_size, stored.chunk_size, image)
        with mounted_read_only(image) as root:
            inside = os.path.join(root, path.lstrip("/"))
            if not os.path.lexists(inside):
                raise NotFoundError(
                    f"{path}: not on disk {disk} of VM {vm} in snapshot {source.snapshot_id[:8]}"
                )
            os.makedirs(target, exist_ok=True)
            dest = os.path.join(target, os.path.basename(path.rstrip("/")) or disk)
            if os.path.lexists(dest):
                raise UsageError(f"{dest} exists: restore into another directory")
            if os.path.isdir(inside) and not os.path.islink(inside):
                shutil.copytree(inside, dest, symlinks=True)
            else:
                shutil.copy2(inside, dest, follow_symlinks=False)
            return dest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
