"""The image files this host's own VM backups copied, per VM and disk: what `--in-place` may replace.

A snapshot's image paths are hostile input (whoever can write the repository wrote them), so an
in-place restore cannot take "put vda back over /etc/passwd" from it. Like "restore to original
location" in Hyper-V or Veeam, which overwrites only the disks the hypervisor itself lists for the
VM, the host decides: every `vm backup` records here the image of each disk it copied, as this
host's QEMU named it, and an in-place restore replaces only a path recorded for that VM and disk.
The record lives in the state directory (root's, 0600), one file per VM named by a hash of its
name (a VM name may hold any character).
"""

from __future__ import annotations

import hashlib
import os

import msgspec

from shadowvault import paths
from shadowvault.fsutil import atomic_write
from shadowvault.typed_decoding import decode_json

DIRECTORY = "vm-images"
MAX_PER_DISK = 16  # the paths kept per disk, newest last: an image moved keeps its old path a while


class Record(msgspec.Struct, kw_only=True):
    vm: str
    disks: dict[str, list[str]] = {}  # disk -> the image paths backups of it copied


def _path(vm: str) -> str:
    digest = hashlib.sha256(vm.encode(errors="surrogateescape")).hexdigest()[:32]
    return os.path.join(paths.state_dir(), DIRECTORY, f"{digest}.json")


def known(vm: str) -> dict[str, list[str]]:
    """disk -> the images this host's backups of `vm` copied ({} when none did, or the record is
    unreadable: then nothing may be replaced in place)."""
    try:
        with open(_path(vm), "rb") as f:
            record = decode_json(f.read(), Record)
    except (OSError, msgspec.DecodeError):
        return {}
    return record.disks if record.vm == vm else {}


def remember(vm: str, images: dict[str, str]) -> None:
    """Add `images` (disk -> image file) to `vm`'s record; written aside and renamed, never half."""
    disks = known(vm)
    for disk, image in images.items():
        kept = [p for p in disks.get(disk, []) if p != image]
        disks[disk] = [*kept, image][-MAX_PER_DISK:]
    path = _path(vm)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    atomic_write(path, msgspec.json.encode(Record(vm=vm, disks=disks)), mode=0o600)
