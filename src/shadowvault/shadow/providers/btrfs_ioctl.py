"""btrfs ioctls: snapshot, delete and list subvolumes, and read a subvolume's read-only flag.

Plain calls on directory descriptors, without btrfs-progs: the provider runs them inside a shadow
set's commit, where a subprocess per subvolume would cost more than the snapshot itself.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Collection

BTRFS_IOC_SNAP_CREATE_V2 = 0x50009417
BTRFS_IOC_SNAP_DESTROY_V2 = 0x5000943F
BTRFS_IOC_TREE_SEARCH = 0xD0009411
BTRFS_IOC_INO_LOOKUP = 0xD0009412
BTRFS_IOC_SUBVOL_GETFLAGS = 0x80089419
BTRFS_IOC_GET_SUBVOL_INFO = 0x81F8943C  # unprivileged, Linux 4.18+
BTRFS_SUBVOL_RDONLY = 1 << 1
BTRFS_ROOT_SUBVOL_RDONLY = 1 << 0  # the same flag as the root item keeps it (GET_SUBVOL_INFO's `flags`)
BTRFS_FIRST_FREE_OBJECTID = 256  # the inode number of every subvolume's root directory
BTRFS_ROOT_TREE_OBJECTID = 1
BTRFS_ROOT_REF_KEY = 156

_VOL_ARGS_V2 = struct.Struct("=qQQ32s4040s")  # fd, transid, flags, union, name
_SEARCH_KEY = struct.Struct("=7Q4I4Q")  # btrfs_ioctl_search_key (104 bytes)
_SEARCH_HEADER = struct.Struct("=3Q2I")  # transid, objectid, offset, type, len
_ROOT_REF = struct.Struct("=2QH")  # dirid, sequence, name_len
_INO_LOOKUP = struct.Struct("=2Q4080s")  # treeid, objectid, name
# btrfs_ioctl_get_subvol_info_args: treeid, name, parent_id, dirid, generation, flags, uuid,
# parent_uuid, received_uuid, then transids, times and reserved words (504 bytes in all)
_SUBVOL_INFO = struct.Struct("=Q256s4Q16s16s16s")
_SUBVOL_INFO_SIZE = 504


def _open_dir(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)


def snapshot(source: str, parent: str, name: str, *, readonly: bool = True) -> None:
    """Snapshot the subvolume whose root is `source` as `parent/name`."""
    src, dst = _open_dir(source), _open_dir(parent)
    try:
        args = _VOL_ARGS_V2.pack(src, 0, BTRFS_SUBVOL_RDONLY if readonly else 0, b"", name.encode())
        fcntl.ioctl(dst, BTRFS_IOC_SNAP_CREATE_V2, bytearray(args))
    finally:
        os.close(src)
        os.close(dst)


def destroy(parent: str, name: str) -> None:
    """Delete the subvolume `parent/name`."""
    fd = _open_dir(parent)
    try:
        fcntl.ioctl(fd, BTRFS_IOC_SNAP_DESTROY_V2, bytearray(_VOL_ARGS_V2.pack(0, 0, 0, b"", name.encode())))
    finally:
        os.close(fd)


def _ino_lookup(fd: int, tree_id: int, objectid: int) -> tuple[int, str]:
    """(tree id, path of directory `objectid` relative to that subvolume's root) via INO_LOOKUP."""
    buf = bytearray(_INO_LOOKUP.pack(tree_id, objectid, b""))
    fcntl.ioctl(fd, BTRFS_IOC_INO_LOOKUP, buf)
    tree, _, name = _INO_LOOKUP.unpack(buf)
    return tree, name.split(b"\0", 1)[0].decode(errors="surrogateescape")


def nested_subvolumes(mount_point: str) -> list[str]:
    """Paths (relative to the mount) of subvolumes directly inside the mounted one (needs root)."""
    fd = _open_dir(mount_point)
    try:
        subvol_id, _ = _ino_lookup(fd, 0, BTRFS_FIRST_FREE_OBJECTID)
        found: list[str] = []
        min_offset = 0
        while True:
            key = _SEARCH_KEY.pack(
                BTRFS_ROOT_TREE_OBJECTID,
                subvol_id,
                subvol_id,
                min_offset,
                2**64 - 1,
                0,
                2**64 - 1,
                BTRFS_ROOT_REF_KEY,
                BTRFS_ROOT_REF_KEY,
                4096,
                0,
                0,
                0,
                0,
                0,
            )
            buf = bytearray(key + bytes(4096 - len(key)))
            fcntl.ioctl(fd, BTRFS_IOC_TREE_SEARCH, buf)
            nr_items = _SEARCH_KEY.unpack_from(buf)[9]
            if nr_items == 0:
                return found
            pos = _SEARCH_KEY.size
            for _ in range(nr_items):
                _, _, child_id, item_type, length = _SEARCH_HEADER.unpack_from(buf, pos)
                pos += _SEARCH_HEADER.size
                if item_type == BTRFS_ROOT_REF_KEY:
                    dirid, _, name_len = _ROOT_REF.unpack_from(buf, pos)
                    start = pos + _ROOT_REF.size
                    name = bytes(buf[start : start + name_len]).decode(errors="surrogateescape")
                    _, dir_path = _ino_lookup(fd, subvol_id, dirid)
                    found.append(dir_path + name)
                pos += length
                min_offset = child_id + 1
            if min_offset >= 2**64:
                return found
    finally:
        os.close(fd)


def is_read_only(path: str) -> bool:
    """Whether the subvolume whose root is `path` is read-only (a snapshot nothing can change)."""
    fd = _open_dir(path)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, buf)
    finally:
        os.close(fd)
    return bool(int.from_bytes(buf, "little") & BTRFS_SUBVOL_RDONLY)


def is_snapshot_copy(path: str) -> bool:
    """Whether the subvolume whose root is `path` is a read-only snapshot of another subvolume (or a
    received one): a copy of history that snapper and its kin keep, not data of its own."""
    fd = _open_dir(path)
    try:
        buf = bytearray(_SUBVOL_INFO_SIZE)
        fcntl.ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, buf)
    finally:
        os.close(fd)
    *_, flags, _uuid, parent_uuid, received_uuid = _SUBVOL_INFO.unpack_from(buf)
    copied = any(parent_uuid) or any(received_uuid)
    return bool(flags & BTRFS_ROOT_SUBVOL_RDONLY) and copied


def nested_subvolume_tree(root: str, skip: str, hidden: Collection[str] = ()) -> list[str]:
    """Paths (relative to `root`, parents before children) of every subvolume nested in the one whose
    root is `root`, however deep; those under a top-level directory named `skip` are left out, and
    so are those at or below a `hidden` path (relative: where another mount covers the tree)."""
    found: list[str] = []
    pending = [""]
    while pending:
        base = pending.pop()
        for rel in sorted(nested_subvolumes(os.path.join(root, base) if base else root)):
            path = os.path.join(base, rel) if base else rel
            if path.split("/", 1)[0] == skip or any(path == h or path.startswith(h + "/") for h in hidden):
                continue
            found.append(path)
            pending.append(path)
    return sorted(found)
