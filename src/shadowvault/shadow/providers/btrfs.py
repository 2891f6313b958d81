"""The btrfs provider: a read-only snapshot of the subvolume mounted at the volume, by ioctl.

The snapshot is atomic (one transaction) and takes milliseconds, so it needs no fsfreeze; it must
not be combined with one either, because a snapshot of a frozen btrfs blocks until thaw.

A btrfs snapshot leaves out the subvolumes nested inside the snapshotted one (they appear in it as
empty directories), while a live walk crosses into them. So each writable nested subvolume gets a
read-only snapshot of its own, taken right after the volume's (each atomic on its own), named
`<set id>-<index>.<n>` beside it; a read-only one (a snapshot already, e.g. snapper's or docker's)
is read where it is. `provider_data["nested_images"]` maps each nested subvolume's path in the
volume to where it is read; `shadow/path_map.py` and the backup's grafts follow it. Each image is
its own btrfs transaction: a nested subvolume's is of a later instant than the volume's
(milliseconds), not of the same one, and nothing freezes them together (a btrfs shadow forbids
fsfreeze).

Only the nested subvolumes the requester reads are imaged (its `ReadScope`, `btrfs_nested.py`): a
backup of one directory does not snapshot the hundreds docker or snapper keep elsewhere on the
volume, nor take in other tools' snapshots that the backup leaves out. Without a scope
(`shadows create`, `exec`) every one is.

A nested subvolume with a mount at its place (or above it, inside the volume) gets no image here:
what is mounted there is a volume of its own, which the requester shadows as such (the backup does,
as it does any mount below its paths), as the images of other providers leave out every mount. An
image of it here as well would snapshot the same subvolume twice, in two places of the manifest.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import time

from shadowvault.errors import PermissionDeniedError, ProviderError, UnsupportedError
from shadowvault.shadow.manifest import Shadow
from shadowvault.shadow.providers.base import (
    IMAGE_NAME,
    WHOLE_VOLUMES,
    FoundImage,
    FreezePolicy,
    Provider,
    ReadScope,
    image_name,
)
from shadowvault.shadow.providers.btrfs_ioctl import (
    BTRFS_FIRST_FREE_OBJECTID,
    destroy,
    is_read_only,
    snapshot,
)
from shadowvault.shadow.providers.btrfs_nested import nested_in_scope, reachable_nested
from shadowvault.shadow.providers.hidden_dir import (
    check_ours,
    check_reachable,
    ensure_shadow_dir,
    existing_shadow_dir,
    mounts_within,
    shadow_dir,
)
from shadowvault.shadow.providers.own_images import own_image_path, own_volume
from shadowvault.shadow.volumes import Volume

log = logging.getLogger(__name__)

# the snapshot of a nested subvolume: the volume's image name and the subvolume's number in the set
NESTED_IMAGE_NAME = re.compile(IMAGE_NAME.pattern.rstrip("$") + r"\.(?P<nested>[0-9]{1,6})$")


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

    def create(self, volume: Volume, set_id: str, index: int, scope: ReadScope = WHOLE_VOLUMES) -> Shadow:
        reason = self.unsupported_reason(volume)
        if reason:
            raise UnsupportedError(reason)
        parent = ensure_shadow_dir(volume)
        name = image_name(set_id, index)
        nested = nested_in_scope(volume.mount_point, self._nested(volume.mount_point), scope)
        self._snapshot(volume.mount_point, parent, name)
        created = time.time()
        path = os.path.join(parent, name)
        try:
            nested_images = self._snapshot_nested(volume.mount_point, parent, name, nested)
        except BaseException:
            self._delete_with_nested(parent, name)
            raise
        return Shadow(
            volume=volume.mount_point,
            fs_uuid=volume.fs_uuid,
            fstype=volume.fstype,
            provider=self.name,
            path=path,
            atomic=True,
            created=created,
            provider_data={
                "subvolume": path,
                "parent": parent,
                "name": name,
                "nested_subvolumes": nested,
                "nested_images": nested_images,
            },
        )

    @staticmethod
    def _snapshot(source: str, parent: str, name: str) -> None:
        try:
            snapshot(source, parent, name)
        except OSError as err:
            if err.errno == errno.EPERM:
                raise PermissionDeniedError(f"btrfs snapshot of {source}: needs root") from err
            raise ProviderError(f"btrfs snapshot of {source} failed: {err.strerror}") from err

    def _snapshot_nested(self, mount_point: str, parent: str, name: str, nested: list[str]) -> dict[str, str]:
        """Where each nested subvolume is read: its own snapshot, or itself when it is read-only."""
        images: dict[str, str] = {}
        for number, rel in enumerate(nested, 1):
            source = os.path.join(mount_point, rel)
            try:
                frozen = is_read_only(source)
            except OSError as err:
                raise ProviderError(f"cannot read the flags of subvolume {source}: {err.strerror}") from err
            if frozen:
                images[rel] = source
                continue
            self._snapshot(source, parent, f"{name}.{number}")
            images[rel] = os.path.join(parent, f"{name}.{number}")
        return images

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
        """Subvolumes named `<set id>-<index>` (and `.<n>` for a nested one) in `<mount>/.shadowvault`:
        our snapshots, and nothing else."""
        if volume.fstype != "btrfs":
            return []
        parent = existing_shadow_dir(volume.mount_point)
        if parent is None:
            return []
        found = []
        for entry in os.scandir(parent):
            match = IMAGE_NAME.match(entry.name) or NESTED_IMAGE_NAME.match(entry.name)
            if match is not None and _is_subvolume(entry):
                shadow = self._shadow_at(volume.mount_point, volume.fs_uuid, volume.fstype, entry.name)
                found.append(FoundImage(match["set_id"], shadow))
        return found

    @staticmethod
    def _nested(mount_point: str) -> list[str]:
        """Nested subvolumes other than our own snapshots and those a mount covers, parents first;
        [] when they cannot be listed."""
        try:
            return reachable_nested(mount_point)
        except OSError as err:
            log.debug("cannot list nested subvolumes of %s: %s", mount_point, err)
            return []

    def delete(self, shadow: Shadow) -> None:
        """Delete the snapshot (and its nested ones): only one of ours, in `<volume>/.shadowvault`."""
        parent = shadow_dir(own_volume(shadow))
        wanted = shadow.provider_data.get("subvolume") or shadow.path
        path = own_image_path(shadow, wanted, parent, (IMAGE_NAME, NESTED_IMAGE_NAME))
        check_reachable(shadow, parent)
        if check_ours(shadow, parent) and os.path.lexists(path):
            self._delete_with_nested(parent, os.path.basename(path))

    def _delete_with_nested(self, parent: str, name: str) -> None:
        for nested in _nested_images_of(parent, name):  # first: the volume's own image names the set
            self._delete_image(parent, nested)
        self._delete_image(parent, name)

    @staticmethod
    def _delete_image(parent: str, name: str) -> None:
        path = os.path.join(parent, name)
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


def _is_subvolume(entry: os.DirEntry[str]) -> bool:
    try:
        st = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_ino == BTRFS_FIRST_FREE_OBJECTID  # a subvolume's root


def _nested_images_of(parent: str, name: str) -> list[str]:
    """The snapshots of nested subvolumes that belong to image `name`, found by their names."""
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(f"{name}.") and NESTED_IMAGE_NAME.match(n))
