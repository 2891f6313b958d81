"""The C library, for the few calls the os module lacks (mallopt, linkat, fanotify, mount).

Loaded from the process's own symbols (`dlopen(NULL)`: the interpreter is linked against it), not
by `ctypes.util.find_library("c")`, which runs `ldconfig -p` in a child process: two of those were
~10 ms of every command's start. One handle for the process, with errno kept for the caller.
"""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def libc() -> ctypes.CDLL:
    """The process's C library (OSError where the process has no dynamic symbols to look in)."""
    return ctypes.CDLL(None, use_errno=True)
