"""The reflink provider: a FICLONE copy of the whole volume into `<mount>/.shadowvault/<set>-<index>`.

Each file's data is shared with the original (copy-on-write), so the copy costs metadata only. The
copy is NOT atomic across files: it is taken one file after another while writers hold their
applications, so writer-held data is consistent and everything else is only as consistent as a live
copy. The shadow says so (`atomic=False`).

Metadata is preserved: directories, symlinks, modes, owners, atime/mtime in ns, xattrs (with ACLs as
`system.posix_acl_*`; XFS's duplicate `trusted.SGI_ACL_*` forms are left to the filesystem), hard
links, device nodes, FIFOs and sockets. The hidden directory `.shadowvault` and other filesystems
mounted below the volume are skipped; btrfs subvolumes below it are copied (same filesystem).

Read-only-ness: the copy sits in `<mount>/.shadowvault`, mode 0700 and ours, so no other user can
reach it; root could still write into it (nothing enforces read-only for root, unlike a btrfs
read-only snapshot), which is why `shadows expose` gives readers a read-only bind mount.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import stat
import struct
import threading
import time
from typing import ClassVar

from shadowvault.errors import PermissionDeniedError, ProviderError, ShadowvaultError, UnsupportedError
from shadowvault.proc import pid_alive
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
from shadowvault.shadow.providers.hidden_dir import (
    check_ours,
    check_reachable,
    drop_default_acl,
    ensure_shadow_dir,
    existing_shadow_dir,
    mounts_within,
    shadow_dir,
)
from shadowvault.shadow.providers.own_images import own_image_path, own_volume
from shadowvault.shadow.providers.tree_copy import CopyCancelled, TreeCopier
from shadowvault.shadow.volumes import Volume

log = logging.getLogger(__name__)

XFS_IOC_FSGEOMETRY = 0x8100587E  # _IOR('X', 126, struct xfs_fsop_geom), 256 bytes
XFS_IOC_FSGEOMETRY_V4 = 0x8070587C  # _IOR('X', 124, struct xfs_fsop_geom_v4), 112 bytes
XFS_FSOP_GEOM_FLAGS_REFLINK = 1 << 20
_XFS_GEOM_FLAGS_OFFSET = 92

REFLINK_FSTYPES = ("xfs", "btrfs")
PARTIAL_MARK = ".partial-"
BTRFS_SUBVOLUME_ROOT_INO = 256  # a btrfs subvolume's root: the btrfs provider's snapshot, not our copy
# a copy still being made, or left half-made by a process that ended: `.<set id>-<index>.partial-<pid>`
PARTIAL_NAME = re.compile(r"^\." + IMAGE_NAME.pattern.strip("^$") + re.escape(PARTIAL_MARK) + r"[0-9]+$")


def xfs_has_reflink(mount_point: str) -> bool:
    """Whether the XFS at `mount_point` was made with reflink=1 (read-only geometry query, no write)."""
    fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for request, size in ((XFS_IOC_FSGEOMETRY, 256), (XFS_IOC_FSGEOMETRY_V4, 112)):
            buf = bytearray(size)
            try:
                fcntl.ioctl(fd, request, buf)
            except OSError as err:
                if err.errno in (errno.ENOTTY, errno.EINVAL):
                    continue
                raise
            (flags,) = struct.unpack_from("=I", buf, _XFS_GEOM_FLAGS_OFFSET)
            return bool(flags & XFS_FSOP_GEOM_FLAGS_REFLINK)
        return False
    finally:
        os.close(fd)


def _copy_error(volume: Volume, err: OSError) -> ShadowvaultError:
    where = f" ({err.filename})" if err.filename else ""
    if err.errno == errno.EPERM:
        return PermissionDeniedError(f"reflink copy of {volume.mount_point}: needs root{where}")
    if err.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL):
        return UnsupportedError(
            f"provider reflink cannot shadow {volume.mount_point}: FICLONE refused{where}"
        )
    return ProviderError(f"reflink copy of {volume.mount_point} failed: {err.strerror}{where}")


def sweep_partial_copies(parent: str) -> list[str]:
    """Remove copies left half-made in `parent` by a process that no longer runs; returns them."""
    swept = []
    for entry in os.scandir(parent):
        mark = entry.name.rfind(PARTIAL_MARK)
        if not entry.name.startswith(".") or mark < 0:
            continue
        pid = entry.name[mark + len(PARTIAL_MARK) :]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        log.info("removing %s, a copy its process (pid %s) left unfinished", entry.path, pid)
        shutil.rmtree(entry.path, ignore_errors=True)
        swept.append(entry.path)
    return swept


class ReflinkProvider(Provider):
    """A copy-on-write tree copy, for XFS (reflink=1) and btrfs."""

    name = "reflink"
    atomic = False
    freeze_policy = FreezePolicy.FORBIDS
    priority = 20
    copier: ClassVar[type[TreeCopier]] = TreeCopier  # what copies the tree (a test may slow it down)

    def __init__(self) -> None:
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def unsupported_reason(self, volume: Volume) -> str | None:
        # Decided without writing anything: `volumes list` asks every volume of the machine.
        prefix = f"provider reflink cannot shadow {volume.mount_point}"
        if volume.fstype not in REFLINK_FSTYPES:
            return f"{prefix}: it is {volume.fstype}, which has no reflinks (only xfs and btrfs have)"
        if volume.read_only:
            return f"{prefix}: it is mounted read-only, so no copy can be placed on it"
        if volume.fstype == "xfs":
            try:
                if not xfs_has_reflink(volume.mount_point):
                    return f"{prefix}: this XFS was made without reflink (mkfs.xfs -m reflink=1)"
            except OSError as err:
                return f"{prefix}: cannot read its XFS geometry: {err.strerror}"
        return None

    def create(self, volume: Volume, set_id: str, index: int, scope: ReadScope = WHOLE_VOLUMES) -> Shadow:
        reason = self.unsupported_reason(volume)
        if reason:
            raise UnsupportedError(reason)
        parent = ensure_shadow_dir(volume)
        sweep_partial_copies(parent)
        name = image_name(set_id, index)
        target = os.path.join(parent, name)
        # Built under a name that says whose it is, renamed when whole: a copy interrupted by a
        # crash is recognisable and swept by the next create on this volume.
        partial = os.path.join(parent, f".{name}{PARTIAL_MARK}{os.getpid()}")
        skipped_mounts = [
            mp for mp in mounts_within(volume.mount_point) if mp != volume.mount_point.rstrip("/")
        ]
        skip = {shadow_dir(volume.mount_point), *skipped_mounts}
        if os.path.lexists(target):
            raise ProviderError(f"cannot create {target}: it exists already")
        try:
            os.mkdir(partial, 0o700)
        except OSError as err:
            raise ProviderError(f"cannot create {partial}: {err.strerror}") from err
        drop_default_acl(partial)
        copier = self.copier(
            volume.mount_point, partial, skip=skip, xfs=volume.fstype == "xfs", cancelled=self._cancelled
        )
        try:
            copier.run()
            os.rename(partial, target)
        except BaseException as err:
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(err, CopyCancelled):
                raise ProviderError(f"reflink copy of {volume.mount_point} was cancelled") from err
            if isinstance(err, OSError):
                raise _copy_error(volume, err) from err
            raise
        created = time.time()
        notes = []
        if skipped_mounts:
            notes.append(
                f"other filesystems mounted below {volume.mount_point} are not in its shadow: "
                + ", ".join(skipped_mounts)
            )
        notes.extend(copier.problems)
        return Shadow(
            volume=volume.mount_point,
            fs_uuid=volume.fs_uuid,
            fstype=volume.fstype,
            provider=self.name,
            path=target,
            atomic=False,
            created=created,
            provider_data={"directory": target, "files": copier.files, "directories": copier.directories},
            notes=notes,
        )

    def planned(self, volume: Volume, set_id: str, index: int) -> Shadow:
        return self._shadow_at(
            volume, os.path.join(shadow_dir(volume.mount_point), image_name(set_id, index))
        )

    def _shadow_at(self, volume: Volume, directory: str) -> Shadow:
        return Shadow(
            volume=volume.mount_point,
            fs_uuid=volume.fs_uuid,
            fstype=volume.fstype,
            provider=self.name,
            path=directory,
            atomic=False,
            provider_data={"directory": directory},
        )

    def found_images(self, volume: Volume) -> list[FoundImage]:
        """Copies named `<set id>-<index>` in `<mount>/.shadowvault`, and half-made ones of ended processes.

        A btrfs subvolume there is the btrfs provider's snapshot, not a copy: left to that provider.
        """
        if volume.fstype not in REFLINK_FSTYPES:
            return []
        parent = existing_shadow_dir(volume.mount_point)
        if parent is None:
            return []
        found = []
        for entry in os.scandir(parent):
            name = entry.name
            mark = name.rfind(PARTIAL_MARK)
            if name.startswith(".") and mark > 0:  # `.<set id>-<index>.partial-<pid>`
                pid = name[mark + len(PARTIAL_MARK) :]
                if not pid.isdigit() or pid_alive(int(pid)):
                    continue
                name = name[1:mark]
            match = IMAGE_NAME.match(name)
            if match is None:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            if volume.fstype == "btrfs" and st.st_ino == BTRFS_SUBVOLUME_ROOT_INO:
                continue
            found.append(FoundImage(match["set_id"], self._shadow_at(volume, entry.path)))
        return found

    def delete(self, shadow: Shadow) -> None:
        """Remove the copy: only one of ours, in `<volume>/.shadowvault` under our naming."""
        parent = shadow_dir(own_volume(shadow))
        wanted = shadow.provider_data.get("directory") or shadow.path
        target = own_image_path(shadow, wanted, parent, (IMAGE_NAME, PARTIAL_NAME))
        check_reachable(shadow, parent)
        if not check_ours(shadow, parent) or not os.path.lexists(target):
            return
        busy = mounts_within(target)
        if busy:
            raise ProviderError(f"cannot delete {target}: {busy[0]} is mounted there; unexpose it first")
        try:
            shutil.rmtree(target)
        except FileNotFoundError:
            return
        except OSError as err:
            raise ProviderError(f"cannot delete reflink copy {target}: {err.strerror}") from err
