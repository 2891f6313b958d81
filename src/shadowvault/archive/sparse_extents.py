"""Where a file's data is: its data and hole segments (SEEK_DATA/SEEK_HOLE), so holes are never read.

A backup reads the data segments and records each hole as a run of zeros (zero blob ids), so a
sparse file costs what its data costs. A hole shorter than `min_hole` (the chunker's smallest
chunk) is read with the data around it: skipping it would cut that data into chunks smaller than
the chunker makes (worse deduplication, more blobs), and reading a hole costs no disk I/O. The last
data segment is read to the end of the file, so a file that grows while it is read is stored as
read. A filesystem that does not know holes reports the whole file as data.

Written zeros are cut the same way (`SegmentReader`): a data segment ends before a run of at least
`min_hole` zero bytes in whole 4 KiB blocks, the run is recorded as zeros (read, not stored), and
the data after it starts a segment of its own. So a sparse file and a copy of it whose holes were
written out are cut into the same chunks and the same zero runs: the copy adds nothing.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass

from shadowvault.repo.zero_blobs import ZEROS

MIN_HOLE = 64 << 10  # never skip less than this, whatever the caller asks
ZERO_BLOCK = 4096  # runs of written zeros are found in whole aligned blocks, as filesystems keep holes
SAMPLE_STEP = 64 << 10  # one block in every SAMPLE_STEP is compared (a run of MIN_HOLE holds one)
READ_SIZE = 1 << 20  # how much of a run of zeros is read at once to find its end
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


def zero_run_end(fd: int, start: int, end: int | None) -> int:
    """Where the run of zero blocks starting at `start` ends: the start of the first block holding a
    byte that is not zero, or `end` (the end of the file when None, or when it comes first)."""
    position = start
    while end is None or position < end:
        block = os.pread(fd, READ_SIZE if end is None else min(READ_SIZE, end - position), position)
        if not block:
            return position
        if not ZEROS.startswith(block):
            first = len(block) - len(block.lstrip(b"\0"))
            return max(start, _align_down(position + first, ZERO_BLOCK))
        position += len(block)
    return end


def _align_down(offset: int, unit: int) -> int:
    return offset - offset % unit


def _align_up(offset: int, unit: int) -> int:
    return offset + -offset % unit


class SegmentReader(io.RawIOBase):
    """A data segment of an open file as a stream for the chunker, ending early before the first run
    of at least `min_hole` zero bytes in whole aligned blocks (written zeros: `zero_run` then says
    where it starts), so a copy of a sparse file whose holes were written out is cut exactly as the
    sparse file is. Positioned reads: the file's offset is not used; the descriptor stays open.

    Finding runs costs one 4 KiB comparison per SAMPLE_STEP read (a run of 64 KiB or more holds a
    sampled block); a block found zero is followed backwards to the run's start and forwards to
    confirm its length. Bytes given to the chunker are never taken back: a read whose last blocks are
    zeros stops before them, so a run that continues past it is found from its start."""

    def __init__(self, fd: int, start: int, end: int | None, *, min_hole: int) -> None:
        super().__init__()
        self._fd = fd
        self.position = start
        self._end = end
        self._min_hole = max(min_hole, MIN_HOLE)
        self.zero_run: int | None = None  # where the run of zeros that ended the segment starts

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self.zero_run is not None:
            return 0
        view = memoryview(buffer).cast("B")
        if self._end is not None:
            view = view[: max(0, self._end - self.position)]
        if not len(view):
            return 0
        got = os.preadv(self._fd, [view], self.position)
        kept = self._data_before_zeros(view[:got]) if got else 0
        self.position += kept
        return kept

    def _data_before_zeros(self, data: memoryview) -> int:
        """How many of the bytes just read (at `position`) are data before a run of zeros."""
        start, stop = self.position, self.position + len(data)
        sample = _align_up(start, SAMPLE_STEP)
        while sample + ZERO_BLOCK <= stop:
            if ZEROS.startswith(data[sample - start : sample - start + ZERO_BLOCK]):
                run = sample
                while run - ZERO_BLOCK >= start and ZEROS.startswith(
                    data[run - ZERO_BLOCK - start : run - start]
                ):
                    run -= ZERO_BLOCK
                if self._long_enough(data, run):
                    self.zero_run = run
                    return run - start
            sample += SAMPLE_STEP
        # trailing zeros: stop before them, so the next read starts where they do and decides
        tail = max(start, _align_down(stop, ZERO_BLOCK))
        if tail < stop and not ZEROS.startswith(data[tail - start :]):
            return len(data)
        while tail - ZERO_BLOCK >= start and ZEROS.startswith(data[tail - ZERO_BLOCK - start : tail - start]):
            tail -= ZERO_BLOCK
        if start < tail < stop:
            return tail - start
        if tail == start and start % ZERO_BLOCK == 0 and self._long_enough(data, start):
            # a read of zeros too short to hold a sampled block: its run is found from its start
            # all the same, or the chunker's read sizes would decide where the data ends
            self.zero_run = start
            return 0
        return len(data)

    def _long_enough(self, data: memoryview, run: int) -> bool:
        """Whether min_hole zero bytes start at `run` (read ahead past `data` when needed)."""
        start, stop = self.position, self.position + len(data)
        need = run + self._min_hole
        if self._end is not None and need > self._end:
            return False
        if not ZEROS.startswith(data[run - start : min(stop, need) - start]):
            return False
        if need <= stop:
            return True
        ahead = os.pread(self._fd, need - stop, stop)
        return len(ahead) == need - stop and ZEROS.startswith(ahead)
