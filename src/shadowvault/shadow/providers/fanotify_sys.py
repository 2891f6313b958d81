"""The system calls of the fanotify provider, via ctypes: fanotify groups, marks and answers, mount(2).

Only what the provider uses: a pre-content group (FAN_CLASS_PRE_CONTENT, Linux >= 6.14) marking a
whole filesystem for FAN_PRE_ACCESS and FAN_OPEN_PERM, reading its events with their range records,
and answering them; plus mount/umount2 for the FUSE view of the shadow.
"""

from __future__ import annotations

import ctypes
import os
import struct
from typing import NamedTuple

from shadowvault.libc import libc

FAN_CLOEXEC = 0x1
FAN_CLASS_PRE_CONTENT = 0x8
FAN_REPORT_TID = 0x100  # the event's pid is the thread's id: its /proc/<tid>/syscall is the blocked call
FAN_MARK_ADD = 0x1
FAN_MARK_REMOVE = 0x2
FAN_MARK_FILESYSTEM = 0x100
FAN_MARK_IGNORED_SURV_MODIFY = 0x40
FAN_MARK_IGNORE = 0x400  # Linux >= 6.0: an ignore mask that also works for pre-content events
FAN_OPEN_PERM = 0x10000
FAN_PRE_ACCESS = 0x100000
FAN_ALLOW = 0x1
FAN_DENY = 0x2
FAN_EVENT_INFO_TYPE_RANGE = 6
AT_FDCWD = -100
MARK_MASK = FAN_PRE_ACCESS | FAN_OPEN_PERM

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MNT_DETACH = 0x2

_META = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_INFO_HEADER = struct.Struct("=BBH")  # info_type, pad, len
_RANGE = struct.Struct("=IQQ")  # pad, offset, count (after the info header)
_RESPONSE = struct.Struct("=iI")  # fd, response

_libc = libc()
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class Event(NamedTuple):
    """One permission event: its mask, our descriptor of the file, the thread, and the range if any."""

    mask: int
    fd: int
    pid: int
    offset: int | None
    length: int | None


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def init_group() -> int:
    """A pre-content fanotify group reporting thread ids (needs CAP_SYS_ADMIN and Linux >= 6.14)."""
    flags = FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC | FAN_REPORT_TID
    return _check(_libc.fanotify_init(flags, os.O_RDONLY | os.O_LARGEFILE), "fanotify_init")


def mark_filesystem(group: int, path: str, *, remove: bool = False) -> None:
    """Add (or remove) the pre-content mark on the whole filesystem holding `path`."""
    action = FAN_MARK_REMOVE if remove else FAN_MARK_ADD
    _check(
        _libc.fanotify_mark(group, action | FAN_MARK_FILESYSTEM, MARK_MASK, AT_FDCWD, os.fsencode(path)),
        "fanotify_mark",
    )


def ignore_inode(group: int, fd: int) -> bool:
    """Stop events for the inode of `fd` (saved whole: nothing more to do for it); False if refused."""
    flags = FAN_MARK_ADD | FAN_MARK_IGNORE | FAN_MARK_IGNORED_SURV_MODIFY
    return _libc.fanotify_mark(group, flags, MARK_MASK, fd, None) == 0


def parse_events(buf: bytes) -> list[Event]:
    """The events of one read of the group."""
    events = []
    off = 0
    while off + _META.size <= len(buf):
        ev_len, _, _, meta_len, mask, fd, pid = _META.unpack_from(buf, off)
        offset = length = None
        info = off + meta_len
        while info + _INFO_HEADER.size <= off + ev_len:
            info_type, _, info_len = _INFO_HEADER.unpack_from(buf, info)
            if info_len == 0:
                break
            if info_type == FAN_EVENT_INFO_TYPE_RANGE:
                _, offset, length = _RANGE.unpack_from(buf, info + _INFO_HEADER.size)
            info += info_len
        events.append(Event(mask, fd, pid, offset, length))
        off += ev_len
    return events


def respond(group: int, fd: int, *, allow: bool = True, errno_: int = 0) -> None:
    """Answer the permission event of `fd` (a denial may carry an errno for the caller) and close it."""
    answer = FAN_ALLOW if allow else FAN_DENY | (errno_ << 24 if errno_ else 0)
    try:
        os.write(group, _RESPONSE.pack(fd, answer))
    finally:
        os.close(fd)


def mount(source: str, target: str, fstype: str, flags: int, options: str) -> None:
    _check(
        _libc.mount(source.encode(), os.fsencode(target), fstype.encode(), flags, options.encode()),
        f"mount {target}",
    )


def umount(target: str, *, lazy: bool = True) -> None:
    _check(_libc.umount2(os.fsencode(target), MNT_DETACH if lazy else 0), f"umount {target}")
