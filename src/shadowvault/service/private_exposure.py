"""Where a shadow exposed to a user who is not root is mounted: a directory only that user can enter.

    <socket dir>/exposed/                 root's, 0755
    <socket dir>/exposed/<uid>/           root's, 0700, and an ACL entry user:<uid>:r-x
    <socket dir>/exposed/<uid>/<set>-<n>  the read-only, nosuid, nodev bind mount of shadow n

The user can enter their directory but not write in it: owning it would let them swap the mount
point for a symlink between our check and the mount, and have root mount a shadow anywhere. Below
the mount point every file keeps its owner and mode, so the user reads through the shadow only
what they could read live (a 0600 file of another user stays closed to them).
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

from shadowvault.errors import PermissionDeniedError

ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_ACL_ENTRY = struct.Struct("<HHI")  # tag, permissions, id
_UNDEFINED_ID = 0xFFFFFFFF
_USER_OBJ, _USER, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_RWX, _RX, _NONE = 7, 5, 0


def _user_may_enter_acl(uid: int) -> bytes:
    """The ACL of a 0700 directory of root's that also lets `uid` read and enter it (not write)."""
    entries = [
        (_USER_OBJ, _RWX, _UNDEFINED_ID),
        (_USER, _RX, uid),
        (_GROUP_OBJ, _NONE, _UNDEFINED_ID),
        (_MASK, _RX, _UNDEFINED_ID),
        (_OTHER, _NONE, _UNDEFINED_ID),
    ]
    return struct.pack("<I", _ACL_VERSION) + b"".join(_ACL_ENTRY.pack(*entry) for entry in entries)


def _root_directory(path: Path, mode: int) -> None:
    """`path` exists as a real directory of root's with `mode` (not a symlink, not someone else's)."""
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
        raise PermissionDeniedError(f"{path} is not a directory of root's: it cannot hold private exposures")
    os.chmod(path, mode, follow_symlinks=False)


def base_for(socket: Path) -> Path:
    """The directory of every user's private directory: `exposed/` next to the API socket."""
    return socket.parent / "exposed"


def user_directory(base: Path, uid: int) -> Path:
    """`<base>/<uid>`, made private to `uid` (and root)."""
    base.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    _root_directory(base, 0o755)
    directory = base / str(uid)
    _root_directory(directory, 0o700)
    try:
        os.setxattr(directory, ACL_XATTR, _user_may_enter_acl(uid), follow_symlinks=False)
    except OSError as err:
        raise PermissionDeniedError(
            f"cannot let uid {uid} enter {directory}: {err.strerror} (the filesystem needs POSIX ACLs)"
        ) from err
    return directory


def mount_point(base: Path, uid: int, set_id: str, index: int) -> Path:
    """Where shadow `index` of `set_id` is exposed to `uid` (its directory made private first)."""
    return user_directory(base, uid) / f"{set_id}-{index}"
