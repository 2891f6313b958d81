"""A view whose process was killed (SIGKILL, OOM) cannot unmount itself: the kernel keeps the mount,
and everything under it fails with "Transport endpoint is not connected" until `fusermount -u`.
Mounting there again clears such a mount of ours first (a lazy unmount: nothing can be using a view
that answers nothing); a dead FUSE mount of anything else is left alone with one line saying so, and
so is a live FUSE mount, ours or not (mounting on it would stack a second view silently).

Dead is asked of the filesystem itself: opening the directory is a request to the FUSE process
(a `stat` may be answered from the kernel's attribute cache for a moment after the kill).
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import shutil
from dataclasses import dataclass

from shadowvault import proc
from shadowvault.errors import UsageError

log = logging.getLogger(__name__)

OUR_FSTYPE = "fuse.shadowvault"  # serve.py mounts with subtype "shadowvault"
MOUNTINFO = "/proc/self/mountinfo"
DEAD_ERRNOS = (errno.ENOTCONN, errno.ECONNABORTED)  # the process died / the connection was aborted


@dataclass(frozen=True)
class MountEntry:
    mount_point: str
    fstype: str


def unmount_command(mountpoint: str) -> str:
    """The command a message advises, quoted for a shell (`/media/My Backups` is one argument)."""
    return f"fusermount -u {shlex.quote(mountpoint)}"


def _unescape(field: str) -> str:
    """A mountinfo path: space, tab, newline and backslash are octal escapes there."""
    return field.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "surrogateescape")


def _absolute(path: str) -> str:
    """`path` made absolute with its parent resolved (the mount point itself cannot be stat'ed)."""
    whole = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(whole)), os.path.basename(whole))


def top_mount(path: str) -> MountEntry | None:
    """The mount on top at `path` (the last one listed there), if any."""
    found = None
    with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as table:
        for line in table:
            fields = line.split()
            if len(fields) < 5 or _unescape(fields[4]) != path or "-" not in fields[5:]:
                continue
            after = fields.index("-", 5) + 1
            found = MountEntry(path, fields[after] if after < len(fields) else "")
    return found


def answers(path: str) -> bool:
    """False when the filesystem at `path` is a FUSE mount whose process is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        return err.errno not in DEAD_ERRNOS
    os.close(fd)
    return True


def clear_dead_mount(mountpoint: str) -> bool:
    """Lazily unmount a dead view of ours at `mountpoint`; True when there was one. UsageError when
    a dead FUSE mount of another filesystem is there, or a live one of any (a second view would
    stack on it, hiding it until unmounted twice)."""
    path = _absolute(mountpoint)
    entry = top_mount(path)
    if entry is None or not entry.fstype.startswith("fuse"):
        return False
    if answers(path):
        raise UsageError(
            f"{mountpoint} is already a mount ({entry.fstype}): `{unmount_command(mountpoint)}` first"
        )
    if entry.fstype != OUR_FSTYPE:
        raise UsageError(
            f"{mountpoint}: a dead FUSE mount ({entry.fstype}) is in the way: "
            f"`{unmount_command(mountpoint)}` unmounts it"
        )
    fusermount = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount"
    proc.run([fusermount, "-u", "-z", path], timeout=60)
    log.info("unmounted the dead view at %s", path)
    return True
