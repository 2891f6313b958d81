"""What an access about to happen will change, from the system call its thread is blocked in.

A fanotify pre-content event does not say whether it is a read or a write, and an open-permission
event does not carry the open's flags. The thread that raised it is blocked in the kernel until we
answer, so `/proc/<tid>/syscall` shows the call and its arguments. Only calls known to read, and
opens known not to truncate, are let through without saving; a write saves the event's range;
everything else (truncate, fallocate, copy_file_range, a page fault, io_uring, an unknown call)
saves the whole file first. Conservative: an unknown access costs a copy, never a wrong shadow.

The system call numbers are those of x86_64 (the provider refuses other architectures).
"""

from __future__ import annotations

import platform
from enum import Enum

SUPPORTED_MACHINES = ("x86_64",)

O_TRUNC = 0o1000
_READS = {0, 17, 19, 295, 327}  # read, pread64, readv, preadv, preadv2
_WRITES = {1, 18, 20, 296, 328}  # write, pwrite64, writev, pwritev, pwritev2
_EXECS = {59, 322, 134}  # execve, execveat, uselib: open to map, never truncate
_OPEN_FLAGS_ARG = {2: 1, 257: 2, 304: 2}  # open, openat, open_by_handle_at: index of `flags`


class Save(Enum):
    NOTHING = "nothing"
    RANGE = "range"
    WHOLE = "whole"


def architecture_supported() -> bool:
    return platform.machine() in SUPPORTED_MACHINES


def blocked_call(tid: int) -> list[int] | None:
    """The system call number and arguments `tid` is blocked in; None when it is in none (a fault)."""
    try:
        with open(f"/proc/{tid}/syscall") as f:
            fields = f.read().split()
    except OSError:
        return None
    if not fields or fields[0] in ("running", "-1"):
        return None
    try:
        return [int(fields[0])] + [int(a, 16) for a in fields[1:7]]
    except ValueError:
        return None


def on_open(call: list[int] | None) -> Save:
    """An open is about to happen: save the whole file if it truncates (or may)."""
    if call is None:
        return Save.WHOLE
    number = call[0]
    if number in _EXECS:
        return Save.NOTHING
    arg = _OPEN_FLAGS_ARG.get(number)
    if arg is None or arg + 1 >= len(call):  # creat, openat2, an io_uring worker, ...
        return Save.WHOLE
    return Save.WHOLE if call[arg + 1] & O_TRUNC else Save.NOTHING


def on_access(call: list[int] | None, count: int | None) -> Save:
    """A read, write, truncate or fault is about to happen on a range: what to save first."""
    if call is None:
        return Save.WHOLE
    if call[0] in _READS:
        return Save.NOTHING
    if call[0] in _WRITES and count:
        return Save.RANGE
    return Save.WHOLE
