"""Keep the process's heap from holding on to freed chunk buffers.

glibc raises its mmap threshold every time a large mmapped block is freed (up to 32 MiB), after which
chunk-sized buffers come from per-thread heaps that keep freed memory: a backup's peak RSS grew by
~40 MiB that way. A fixed threshold (which also fixes the trim threshold; 4 MiB at first, 512 KiB
since: see the end) keeps it near what is really in flight (20k files + 288 MiB: 135 -> ~90 MiB).

Fixing the mmap threshold also drops the trim threshold to 128 KiB, and then the heap is shrunk and
regrown around every 1 MiB chunk buffer: page-fault churn that doubled the kernel CPU time of backup
and restore (2 GiB bench: backup 31.1 -> 18.1 CPU s, restore 31.9 -> 17.6). A trim threshold of a
couple of chunks keeps the heap's top for reuse without the churn; 32 MiB kept as much in each of
the arenas (2 GiB / 100k files, cold, 2 runs each: first backup's process 163-172 -> 141-147 MiB at
the same CPU and kernel time, 512 KiB no better; restore 80 -> 76 MiB).

The trim threshold only concerns a heap's top: the pages of chunks freed in its middle (a backup
frees blobs, batches and file metadata in every order) stay resident until malloc_trim(0), which
returns every whole free page. A thread calls it four times a second (2 GiB / 100k files, first
backup, 3 runs each: the process's peak 96-103 -> 88-90 MiB, at the same CPU and kernel time).

The mmap threshold is 512 KiB, the chunker's minimum when it was chosen: every chunk buffer but a
file's last is a mapping of its own, given back whole when freed, where a heap kept the free pages
between live objects until a trim could return them (first backup, 4 runs each: summed PSS peak
89-94 -> 85-86 MiB at the same CPU; 256 KiB mapped small files' buffers too and cost 15 % more CPU,
1 MiB saved half as much). With the chunker's minimum at 256 KiB since, chunks of 256-512 KiB come
from the heaps; a 256 KiB threshold measured the same (first and 5 % backups, 2 runs each: summed
PSS peaks 84-86 MiB either way).

The reader and blob threads share ARENA_MAX heaps (glibc gives each thread one of its own, up to 8
per core): each heap keeps its own free pages between live objects, so fewer heaps hold fewer of
them. Two instead of four (first backup, 3 runs each: summed PSS peak 83-86 -> 81-82 MiB; 5 %
backup and restore at the same time and CPU); one measured no lower than two.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from shadowvault.libc import libc

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
M_TRIM_THRESHOLD = -1
MMAP_THRESHOLD = 512 << 10
TRIM_THRESHOLD = 2 << 20
ARENA_MAX = 2  # every thread of the process shares two heaps (glibc: one per thread up to 8 per core)
TRIM_EVERY = 0.25  # seconds between returns of the heaps' free pages to the kernel
_trimming = threading.Lock()  # held for good once the trimming thread runs


def bound_heap() -> None:
    """Fix glibc's mmap and trim thresholds for this process and trim its heaps as it runs (no-op
    on other C libraries)."""
    try:
        c_library = libc()
        if not c_library.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
            log.debug("mallopt(M_MMAP_THRESHOLD) refused")
        if not c_library.mallopt(M_ARENA_MAX, ARENA_MAX):
            log.debug("mallopt(M_ARENA_MAX) refused")
        if not c_library.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
            log.debug("mallopt(M_TRIM_THRESHOLD) refused")
        _start_trimming(c_library.malloc_trim)
    except (OSError, AttributeError):
        log.debug("no mallopt here; heap left as is")


def heap_bounded() -> bool:
    """True once `bound_heap` has run in this process (its trimming thread is running)."""
    return _trimming.locked()


def _start_trimming(malloc_trim: Callable[[int], int]) -> None:
    """Return the heaps' free pages to the kernel every TRIM_EVERY seconds, for the rest of the
    process (once per process, however often `bound_heap` is called)."""
    if not _trimming.acquire(blocking=False):
        return

    def trim() -> None:
        while True:
            time.sleep(TRIM_EVERY)
            malloc_trim(0)

    threading.Thread(target=trim, name="sv-heap-trim", daemon=True).start()
