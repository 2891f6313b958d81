"""The hidden directory at a volume's root where image-making providers keep their shadows.

`<mount>/.shadowvault` is created 0700 and owned by us: a non-root user can neither read a shadow
through it nor plant a directory or symlink there to capture one. Shared by the btrfs and reflink
providers; the helpers also check, before a delete, that a path still lies on the shadowed volume.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

from shadowvault import proc
from shadowvault.errors import CommandError, ProviderError
from shadowvault.paths_within import is_within
from shadowvault.shadow.manifest import Shadow
from shadowvault.shadow.providers.base import SHADOW_DIR_NAME
from shadowvault.shadow.providers.own_images import ForeignImageError
from shadowvault.shadow.volumes import Volume, list_volumes, volume_of

log = logging.getLogger(__name__)

DEFAULT_ACL_XATTR = "system.posix_acl_default"


class ShadowUnreachableError(ProviderError):
    """The shadow's volume is no longer mounted where it was: the image cannot be deleted now."""


def shadow_dir(mount_point: str) -> str:
    return os.path.join(mount_point, SHADOW_DIR_NAME)


def ensure_shadow_dir(volume: Volume) -> str:
    """Create (or check) `<mount>/.shadowvault`: a real directory, ours, mode 0700, no default ACL."""
    path = shadow_dir(volume.mount_point)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise ProviderError(f"cannot create {path}: {err.strerror}") from err
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise ProviderError(f"{path} exists and is not a directory; move it away and retry")
    if st.st_uid != os.geteuid():
        raise ProviderError(f"{path} is owned by uid {st.st_uid}, not by us; remove it and retry")
    if st.st_dev != os.lstat(volume.mount_point).st_dev:
        raise ProviderError(f"{path} is on another filesystem (something is mounted there)")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    drop_default_acl(path)
    return path


def existing_shadow_dir(mount_point: str) -> str | None:
    """`<mount>/.shadowvault` if it is there and is ours (a real directory we own, on that volume), else None.

    What orphan reaping looks into: a directory planted by someone else, or another filesystem
    mounted there, is not ours to clean.
    """
    path = shadow_dir(mount_point)
    try:
        st = os.lstat(path)
        mount_dev = os.lstat(mount_point).st_dev
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_dev != mount_dev:
        return None
    return path


def drop_default_acl(path: str) -> None:
    """Remove an inherited default ACL, so new entries below get exactly the modes we give them."""
    try:
        os.removexattr(path, DEFAULT_ACL_XATTR, follow_symlinks=False)
    except OSError as err:
        if err.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
            raise


def filesystem_uuid(device: str) -> str | None:
    """The UUID of the filesystem on `device` (blkid), None when it has none or cannot be read."""
    if not device.startswith("/dev/"):
        return None
    try:
        out = proc.output(["blkid", "-o", "value", "-s", "UUID", device], timeout=10, check=False)
    except CommandError:
        return None
    return out.strip() or None


def check_ours(shadow: Shadow, parent: str) -> bool:
    """Whether `parent` (`<volume>/.shadowvault`) exists and is ours; False when it is not there.

    A directory or symlink of that name someone else made is no place of ours to delete from:
    ForeignImageError (the record is dropped; nothing below it is touched).
    """
    if not os.path.lexists(parent):
        return False
    if existing_shadow_dir(os.path.dirname(parent)) != parent:
        raise ForeignImageError(
            f"{parent} is not the shadow directory Shadowvault made (not a directory of ours on "
            f"{shadow.volume}): the {shadow.provider} shadow recorded there is left alone, record dropped"
        )
    return True


def check_reachable(shadow: Shadow, path: str) -> None:
    """Raise ShadowUnreachableError unless `path` lies on the volume the shadow was taken of.

    Guards deletes: if the volume was unmounted, `<mount>/.shadowvault/...` would name a directory
    of whatever filesystem lies below, and we must not remove that.
    """
    holder = volume_of(path, list_volumes(with_uuid=False))
    if holder.mount_point != shadow.volume:
        raise ShadowUnreachableError(
            f"cannot delete the shadow of {shadow.volume}: that volume is no longer mounted there"
        )
    if shadow.fs_uuid:
        current = filesystem_uuid(holder.device)
        if current and current != shadow.fs_uuid:
            raise ShadowUnreachableError(
                f"cannot delete the shadow of {shadow.volume}: another filesystem ({current}) is "
                f"mounted there now, not {shadow.fs_uuid}"
            )


def mounts_within(path: str) -> list[str]:
    """Mount points at or below `path` (a shadow mounted somewhere, a mount inside a copy).

    Read from the mount table: comparing st_dev would call every btrfs subvolume a mount point.
    """
    return [v.mount_point for v in list_volumes(with_uuid=False) if is_within(v.mount_point, path)]
