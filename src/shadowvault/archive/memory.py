"""Keep the process's heap from holding on to freed chunk buffers.

glibc raises its mmap threshold every time a large mmapped block is freed (up to 32 MiB), after which
chunk-sized buffers come from per-thread heaps that keep freed memory: a backup's peak RSS grew by
~40 MiB that way. A fixed 4 MiB threshold (which also fixes the trim threshold) keeps it near what is
really in flight, at no measurable cost in time (measured on 20k files + 288 MiB: 135 -> ~90 MiB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 4 << 20
ARENA_MAX = 4  # reader and blob threads share a few heaps instead of one each (8 per core by default)


def bound_heap() -> None:
    """Fix glibc's mmap threshold for this process (no-op on other C libraries)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
            log.debug("mallopt(M_MMAP_THRESHOLD) refused")
        if not libc.mallopt(M_ARENA_MAX, ARENA_MAX):
            log.debug("mallopt(M_ARENA_MAX) refused")
    except (OSError, AttributeError):
        log.debug("no mallopt here; heap left as is")
