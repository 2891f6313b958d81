"""Large files cut in place: read into two reusable windows, each chunk handed on as a view of one.

FastCDC's stream reader copies every chunk out of its buffer (a new bytes object, whose pages are
faulted in afresh each time: the heap is trimmed under it) and moves its buffer's tail to the front
every 8 MiB, both while holding the GIL: ~1.5 s of the GIL in a backup of 1.5 GiB of large files,
which the walk and the small files' results waited for. Here a stream is read into one of two
windows and cut there (`cut_buf`, whose cut runs without the GIL); each chunk goes to the blob
threads as a view of its window, and a window is read into again only once every chunk of it was
released. While the blob threads store one window's chunks, the other is read and cut.

The cut points are the stream reader's, bit for bit (deduplication against every older snapshot
depends on it): FastCDC finds a chunk's cut as the first position after its minimum where the gear
hash meets the mask in force there, and both the hash and the mask depend only on the bytes from
the chunk's start, so a cut found inside a window is the cut a longer buffer gives. A chunk that
runs to the window's end without a cut is not cut there: it is carried to the start of the next
window (at most the largest chunk, copied once) and cut again with more bytes after it, unless the
stream ended.
"""

from __future__ import annotations

import mmap
import queue
import threading
from collections.abc import Generator
from typing import Protocol

import pyfastcdc

from shadowvault.repo.format import ChunkerParams

WINDOWS = 2  # one being stored by the blob threads while the other is read and cut


class Readable(Protocol):
    def readinto(self, buffer: memoryview) -> int | None: ...


class Window:
    """A reusable buffer and how many of its chunks are still held."""

    __slots__ = ("held", "retired", "view")

    def __init__(self, size: int) -> None:
        # an anonymous mapping, not a bytearray (which zero-fills every page at once): memory only
        # once a large file is read into it, then kept for every later one
        self.view = memoryview(mmap.mmap(-1, size))
        self.held = 0  # chunks handed on and not released
        self.retired = False  # the reader is done with it: free once no chunk is held


class ChunkWindows:
    """Cuts streams with the repository's chunker parameters into views of WINDOWS windows.

    One stream at a time (the caller serializes them); `release` may be called from any thread."""

    def __init__(self, params: ChunkerParams, size: int | None = None) -> None:
        size = size or params.max + (params.max // 8)  # a carried chunk and an eighth as much again
        if size <= params.max:
            raise ValueError("a window must hold more than the largest chunk")
        self._cdc = pyfastcdc.FastCDC(params.avg, min_size=params.min, max_size=params.max, seed=params.seed)
        self._free: queue.SimpleQueue[Window] = queue.SimpleQueue()  # Ctrl-C cannot wedge it (slots.py)
        for _ in range(WINDOWS):
            self._free.put(Window(size))
        self._lock = threading.Lock()

    def chunks(self, stream: Readable) -> Generator[tuple[memoryview, Window], None, None]:
        """The chunks of `stream` as (view, its window); `release(window)` once a chunk is done with.
        A view is valid until then (its window is not read into while any of its chunks is held)."""
        window = self._take()
        try:
            have = 0
            while True:
                have, ended = _fill(stream, window.view, have)
                start = 0
                for chunk in self._cdc.cut_buf(window.view[:have]):
                    end = chunk.offset + chunk.length
                    if end == have and not ended:  # no cut inside the window: carried to the next
                        break
                    with self._lock:
                        window.held += 1
                    yield window.view[chunk.offset : end], window
                    start = end
                if ended:
                    return
                following = self._take()
                try:
                    have -= start
                    following.view[:have] = window.view[start : start + have]
                except BaseException:
                    self._retire(following)
                    raise
                self._retire(window)
                window = following
        finally:
            self._retire(window)

    def release(self, window: Window) -> None:
        """One chunk of `window` is done with (stored, or abandoned)."""
        with self._lock:
            window.held -= 1
            free = window.retired and not window.held
        if free:
            self._free.put(window)

    def _take(self) -> Window:
        window = self._free.get()
        window.retired = False
        return window

    def _retire(self, window: Window) -> None:
        with self._lock:
            if window.retired:
                return
            window.retired = True
            free = not window.held
        if free:
            self._free.put(window)


def _fill(stream: Readable, view: memoryview, have: int) -> tuple[int, bool]:
    """Read into `view` after its first `have` bytes until it is full or the stream ends; the bytes
    it holds, and whether the stream ended."""
    size = len(view)
    while have < size:
        got = stream.readinto(view[have:])
        if not got:
            return have, True
        have += got
    return have, False
