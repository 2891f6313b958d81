"""Where a file's data is: its data and hole segments (SEEK_DATA/SEEK_HOLE), so holes are never read.

A backup reads the data segments and records each hole as a run of zeros (zero blob ids), so a
sparse file costs what its data costs. A hole shorter than `min_hole` (the chunker's smallest
chunk) is read with the data around it: skipping it would cut that data into chunks smaller than
the chunker makes (worse deduplication, more blobs), and reading a hole costs no disk I/O. The last
data segment is read to the end of the file, so a file that grows while it is read is stored as
read. A filesystem that does not know holes reports the whole file as data.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass

MIN_HOLE = 64 << 10  # never skip less than this, whatever the caller asks
_NO_HOLES = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}


@dataclass(frozen=True)
class Segment:
    """Bytes [start, end) of a file; `end` None: data up to the end of the file, however far."""

    start: int
    end: int | None
    hole: bool = False

    @property
    def length(self) -> int:
        assert self.end is not None
        return self.end - self.start


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The file's data extents below `size`, as the filesystem reports them (start, end)."""
    position = 0
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # no data after `position`
                return
            if err.errno in _NO_HOLES:
                yield position, size
                return
            raise
        if start >= size:
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, min(end, size)
        position = end


def file_segments(fd: int, size: int, *, min_hole: int) -> Iterator[Segment]:
    """The file as data and hole segments in order, holes shorter than `min_hole` merged into data."""
    min_hole = max(min_hole, MIN_HOLE)
    pending: tuple[int, int] | None = None  # a data segment not yet given out
    for start, end in data_extents(fd, size):
        if pending is None:
            if start < min_hole:
                pending = (0, end)  # a short hole at the start is read
                continue
            yield Segment(0, start, hole=True)
        elif start - pending[1] < min_hole:
            pending = (pending[0], end)
            continue
        else:
            yield Segment(*pending)
            yield Segment(pending[1], start, hole=True)
        pending = (start, end)
    if pending is None:  # no data at all
        yield Segment(0, size, hole=True) if size >= min_hole else Segment(0, None)
    elif size - pending[1] < min_hole:
        yield Segment(pending[0], None)
    else:
        yield Segment(*pending)
        yield Segment(pending[1], size, hole=True)


class SegmentReader(io.RawIOBase):
    """A data segment of an open file as a stream for the chunker (positioned reads: the file's
    offset is not used; the descriptor stays open)."""

    def __init__(self, fd: int, segment: Segment) -> None:
        super().__init__()
        self._fd = fd
        self._position = segment.start
        self._end = segment.end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._end is not None:
            view = view[: max(0, self._end - self._position)]
        if not len(view):
            return 0
        got = os.preadv(self._fd, [view], self._position)
        self._position += got
        return got
