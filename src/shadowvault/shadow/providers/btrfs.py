"""The btrfs provider: a read-only snapshot of the subvolume mounted at the volume, by ioctl.

The snapshot is atomic (one transaction) and takes milliseconds, so it needs no fsfreeze; it must
not be combined with one either, because a snapshot of a frozen btrfs blocks until thaw.

What a btrfs snapshot leaves out: subvolumes nested inside the mounted one appear in the snapshot as
empty directories. `create` looks for them (a root-tree search, best effort) and says so in the
shadow's notes and `provider_data["nested_subvolumes"]`.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import struct
import time

from shadowvault.errors import PermissionDeniedError, ProviderError, UnsupportedError
from shadowvault.shadow.manifest import Shadow
from shadowvault.shadow.providers.base import (
    IMAGE_NAME,
    SHADOW_DIR_NAME,
    FoundImage,
    FreezePolicy,
    Provider,
    image_name,
)
from shadowvault.shadow.providers.hidden_dir import (
    check_reachable,
    ensure_shadow_dir,
    existing_shadow_dir,
    mounts_within,
    shadow_dir,
)
from shadowvault.shadow.volumes import Volume

log = logging.getLogger(__name__)

BTRFS_IOC_SNAP_CREATE_V2 = 0x50009417
BTRFS_IOC_SNAP_DESTROY_V2 = 0x5000943F
BTRFS_IOC_TREE_SEARCH = 0xD0009411
BTRFS_IOC_INO_LOOKUP = 0xD0009412
BTRFS_SUBVOL_RDONLY = 1 << 1
BTRFS_FIRST_FREE_OBJECTID = 256  # the inode number of every subvolume's root directory
BTRFS_ROOT_TREE_OBJECTID = 1
BTRFS_ROOT_REF_KEY = 156

_VOL_ARGS_V2 = struct.Struct("=qQQ32s4040s")  # fd, transid, flags, union, name
_SEARCH_KEY = struct.Struct("=7Q4I4Q")  # btrfs_ioctl_search_key (104 bytes)
_SEARCH_HEADER = struct.Struct("=3Q2I")  # transid, objectid, offset, type, len
_ROOT_REF = struct.Struct("=2QH")  # dirid, sequence, name_len
_INO_LOOKUP = struct.Struct("=2Q4080s")  # treeid, objectid, name


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


class BtrfsProvider(Provider):
    """Read-only btrfs snapshots in `<mount>/.shadowvault/<set id>-<index>`."""

    name = "btrfs"
    atomic = True
    freeze_policy = FreezePolicy.FORBIDS
    priority = 30

    def unsupported_reason(self, volume: Volume) -> str | None:
        prefix = f"provider btrfs cannot shadow {volume.mount_point}"
        if volume.fstype != "btrfs":
            return f"{prefix}: it is {volume.fstype}, not btrfs"
        if volume.read_only:
            return f"{prefix}: it is mounted read-only, so no snapshot can be placed on it"
        try:
            st = os.stat(volume.mount_point)
        except OSError as err:
            return f"{prefix}: {err.strerror}"
        if st.st_ino != BTRFS_FIRST_FREE_OBJECTID:
            return (
                f"{prefix}: it is a bind mount of a directory ({volume.root}), not of a subvolume; "
                "mount the subvolume itself"
            )
        return None

    def create(self, volume: Volume, set_id: str, index: int) -> Shadow:
        reason = self.unsupported_reason(volume)
        if reason:
            raise UnsupportedError(reason)
        parent = ensure_shadow_dir(volume)
        name = image_name(set_id, index)
        nested = self._nested(volume.mount_point)
        try:
            snapshot(volume.mount_point, parent, name)
        except OSError as err:
            if err.errno == errno.EPERM:
                raise PermissionDeniedError(f"btrfs snapshot of {volume.mount_point}: needs root") from err
            raise ProviderError(f"btrfs snapshot of {volume.mount_point} failed: {err.strerror}") from err
        created = time.time()
        path = os.path.join(parent, name)
        notes = []
        if nested:
            shown = ", ".join(nested[:5]) + (" ..." if len(nested) > 5 else "")
            notes.append(
                f"nested btrfs subvolumes are not in the snapshot of {volume.mount_point} "
                f"(they appear as empty directories): {shown}"
            )
        return Shadow(
            volume=volume.mount_point,
            fs_uuid=volume.fs_uuid,
            fstype=volume.fstype,
            provider=self.name,
            path=path,
            atomic=True,
            created=created,
            provider_data={"subvolume": path, "parent": parent, "name": name, "nested_subvolumes": nested},
            notes=notes,
        )

    def planned(self, volume: Volume, set_id: str, index: int) -> Shadow:
        return self._shadow_at(volume.mount_point, volume.fs_uuid, volume.fstype, image_name(set_id, index))

    def _shadow_at(self, mount_point: str, fs_uuid: str | None, fstype: str, name: str) -> Shadow:
        parent = shadow_dir(mount_point)
        path = os.path.join(parent, name)
        return Shadow(
            volume=mount_point,
            fs_uuid=fs_uuid,
            fstype=fstype,
            provider=self.name,
            path=path,
            atomic=True,
            provider_data={"subvolume": path, "parent": parent, "name": name},
        )

    def found_images(self, volume: Volume) -> list[FoundImage]:
        """Subvolumes named `<set id>-<index>` in `<mount>/.shadowvault`: our snapshots, and nothing else."""
        if volume.fstype != "btrfs":
            return []
        parent = existing_shadow_dir(volume.mount_point)
        if parent is None:
            return []
        found = []
        for entry in os.scandir(parent):
            match = IMAGE_NAME.match(entry.name)
            if match is None:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_ino == BTRFS_FIRST_FREE_OBJECTID:  # a subvolume's root
                shadow = self._shadow_at(volume.mount_point, volume.fs_uuid, volume.fstype, entry.name)
                found.append(FoundImage(match["set_id"], shadow))
        return found

    @staticmethod
    def _nested(mount_point: str) -> list[str]:
        """Nested subvolumes other than our own snapshots; [] when they cannot be listed."""
        try:
            found = nested_subvolumes(mount_point)
        except OSError as err:
            log.debug("cannot list nested subvolumes of %s: %s", mount_point, err)
            return []
        return sorted(p for p in found if p.split("/", 1)[0] != SHADOW_DIR_NAME)

    def delete(self, shadow: Shadow) -> None:
        path = shadow.provider_data.get("subvolume") or shadow.path
        parent, name = os.path.split(path)
        check_reachable(shadow, parent)
        if not os.path.lexists(path):
            return
        busy = mounts_within(path)
        if busy:
            raise ProviderError(f"cannot delete {path}: it is mounted at {busy[0]}; unexpose it first")
        try:
            destroy(parent, name)
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno == errno.EPERM:
                raise PermissionDeniedError(f"deleting btrfs snapshot {path}: needs root") from err
            raise ProviderError(f"cannot delete btrfs snapshot {path}: {err.strerror}") from err
