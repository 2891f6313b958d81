"""A restored file's bytes: a blob written at its place (holes kept where the file had them), runs
of zeros allocated without writing them, and the read-back of --verify.

Used by the restore's threads and by its worker processes (archive/restore_worker.py), which
import only this of the restore.
"""

from __future__ import annotations

import errno
import os

import blake3

from shadowvault.archive.restore_entries import EntryError
from shadowvault.repo.zero_blobs import ZEROS

HOLE_BLOCK = 4096
_ZEROS = bytes(HOLE_BLOCK)
VERIFY_READ = 1 << 20  # what verification reads at once of a zero run's data extents


def write_at(fd: int, data: bytes | memoryview, offset: int, *, sparse: bool) -> None:
    """Write `data` at `offset`; for a file that had holes, aligned all-zero blocks stay holes."""
    if sparse:
        _write_sparse(fd, data, offset)
        return
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _write_sparse(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    pos = 0
    end = len(data)
    while pos < end:
        block_end = min(end, pos + HOLE_BLOCK - (offset + pos) % HOLE_BLOCK)
        start = pos
        # gather a run of blocks of the same kind (data or zeros)
        zero = view[pos:block_end] == _ZEROS[: block_end - pos]
        pos = block_end
        while pos < end:
            nxt = min(end, pos + HOLE_BLOCK)
            if (view[pos:nxt] == _ZEROS[: nxt - pos]) != zero:
                break
            pos = nxt
        if not zero:
            write_at(fd, bytes(view[start:pos]), offset + start, sparse=False)


def read_at(fd: int, length: int, offset: int) -> bytes:
    """`length` bytes from `offset` (fewer only at the end of the file): pread until done."""
    parts: list[bytes] = []
    got = 0
    while got < length and (part := os.pread(fd, length - got, offset + got)):
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def verify_file(fd: int, lengths: list[int], digests: list[bytes | None]) -> None:
    """Read the restored file back through its own descriptor, blob by blob, and compare hashes;
    a run of zeros (digest None) must read as zeros."""
    offset = 0
    for length, digest in zip(lengths, digests, strict=True):
        if digest is None:
            if not _reads_as_zeros(fd, offset, length):
                raise EntryError("verification failed: the restored bytes differ from the snapshot")
            offset += length
            continue
        back = read_at(fd, length, offset)
        if len(back) != length or blake3.blake3(back).digest() != digest:
            raise EntryError("verification failed: the restored bytes differ from the snapshot")
        offset += length
    if os.fstat(fd).st_size != offset:
        raise EntryError("verification failed: the restored bytes differ from the snapshot")


def _reads_as_zeros(fd: int, offset: int, length: int) -> bool:
    """Whether [offset, offset + length) reads as zeros: holes are zeros by definition, only the data
    extents the filesystem reports in the range are read (the file's size is checked by the caller)."""
    end = offset + length
    position = offset
    while position < end:
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # only holes from here to the end of the file
                return True
            if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            data = position  # holes unknown here: read it all
        if data >= end:
            return True
        try:
            stop = min(end, os.lseek(fd, data, os.SEEK_HOLE))
        except OSError:
            stop = end
        while data < stop:
            block = os.pread(fd, min(VERIFY_READ, stop - data), data)
            if not block or not ZEROS.startswith(block):
                return False
            data += len(block)
        position = stop
    return True


def allocate_zero_runs(fd: int, runs: list[tuple[int, int]]) -> None:
    """Give a file that had no holes its zero runs as allocated space (nothing is written)."""
    for offset, length in runs:
        try:
            os.posix_fallocate(fd, offset, length)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            for at in range(offset, offset + length, len(ZEROS)):  # no fallocate: write the zeros
                write_at(fd, memoryview(ZEROS)[: min(len(ZEROS), offset + length - at)], at, sparse=False)
