"""Files from inside a VM's disk without restoring the VM: a read-only loop mount of the restored image.

The image is laid down sparse in a scratch directory, attached with `losetup --find --show
--read-only` (at the first partition's offset when the disk has an MBR: this kernel may have no
partition support on loops), mounted read-only without journal replay, and the wanted path is copied
out with its metadata. The loop device we got, and only that one, is detached in every case.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator

from shadowvault import proc
from shadowvault.errors import NotFoundError, UsageError
from shadowvault.jobs.restore_vm import write_raw
from shadowvault.repo.repository import Repository
from shadowvault.vm import layout

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


def restore_disk_path(repo: Repository, snapshot: str, vm: str, disk: str, path: str, target: str) -> str:
    """Copy `path` from inside VM `vm`'s disk `disk` into `target`; returns what was written."""
    if not path.startswith("/"):
        raise UsageError("--path is a path inside the guest: give it from its root (/etc/hosts)")
    _, snap = repo.find_snapshot(snapshot)
    definition, nodes = layout.read_vm(repo.load_tree, repo.load_blob, snap.tree, vm)
    stored = next((d for d in definition.disks if d.disk == disk), None)
    if stored is None or disk not in nodes:
        raise UsageError(f"VM {vm} has no disk {disk} in this snapshot (disks: {', '.join(nodes)})")
    scratch = tempfile.mkdtemp(prefix="sv-vm-image-")
    try:
        image = os.path.join(scratch, f"{disk}.raw")
        write_raw(repo, list(nodes[disk].content), stored.virtual_size, stored.chunk_size, image)
        with mounted_read_only(image) as root:
            source = os.path.join(root, path.lstrip("/"))
            if not os.path.lexists(source):
                raise NotFoundError(f"{path}: not on disk {disk} of VM {vm} in this snapshot")
            os.makedirs(target, exist_ok=True)
            dest = os.path.join(target, os.path.basename(path.rstrip("/")) or disk)
            if os.path.lexists(dest):
                raise UsageError(f"{dest} exists: restore into another directory")
            if os.path.isdir(source) and not os.path.islink(source):
                shutil.copytree(source, dest, symlinks=True)
            else:
                shutil.copy2(source, dest, follow_symlinks=False)
            return dest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
