"""Content-defined chunking with FastCDC, seeded per repository so chunk sizes fingerprint nothing."""

from __future__ import annotations

import io
import os
import stat
import threading
from collections.abc import Iterator
from typing import BinaryIO

import pyfastcdc

from shadowvault.repo.format import ChunkerParams

# Half of restic's minimum and average (512 KiB / 1 MiB, ~1.45 MiB mean): a change inside a large
# file rewrites the chunks around it, ~2 MiB per changed region at 1 MiB and ~1.1 MiB at this size
# (bench 5 % change, 5 seeds each: 139 -> 110 MiB stored for 77 MiB changed; the first backup 0.15 %
# larger), for about twice the index entries per GiB of large files (small files, one chunk each,
# are most of a tree's blobs). The largest chunk is memory: a large file is cut in two windows of
# it and an eighth (chunk_windows.py), 4.5 MiB; FastCDC with this average reaches 2 MiB in well
# under 1 % of chunks (the cut points below it are the same either way). A repository keeps the
# parameters it was made with (its config).
MIN_SIZE = 256 << 10
AVG_SIZE = 512 << 10
MAX_SIZE = 2 << 20


def default_params(seed: int) -> ChunkerParams:
    return ChunkerParams(min=MIN_SIZE, avg=AVG_SIZE, max=MAX_SIZE, seed=seed)


class _Prefixed:
    """A reader that serves `head` (already read from `source`) and then the rest of `source`."""

    def __init__(self, head: bytes, source: BinaryIO) -> None:
        self._head: memoryview | None = memoryview(head) if head else None
        self._source = source

    def readinto(self, buffer: memoryview) -> int:
        if self._head is not None:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:] if n < len(self._head) else None  # a slice pins the bytes
            return n
        if isinstance(self._source, (io.RawIOBase, io.BufferedIOBase)):
            return self._source.readinto(buffer) or 0
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _remaining_size(source: BinaryIO) -> int | None:
    """Bytes left to read in a regular file; None when unknown (a pipe, an in-memory stream)."""
    try:
        st = os.fstat(source.fileno())
        return st.st_size - source.tell() if stat.S_ISREG(st.st_mode) else None
    except (AttributeError, OSError, ValueError):
        return None


def _read_upto(source: BinaryIO, limit: int) -> bytes:
    """Up to `limit` bytes (fewer only at end of file), however short the reads are."""
    data = source.read(limit)
    while data and len(data) < limit:
        more = source.read(limit - len(data))
        if not more:
            break
        data += more
    return data


class _PerThread(threading.local):
    """A FastCDC instance per thread, built on the thread's first use (~40 us: the seeded gear
    tables)."""

    def __init__(self, params: ChunkerParams) -> None:
        p = params
        self.cdc = pyfastcdc.FastCDC(p.avg, min_size=p.min, max_size=p.max, seed=p.seed)


class Chunker:
    """Cuts files and buffers into chunks with the repository's parameters. Safe to share between
    threads: each thread has its own FastCDC instance (they are documented as not thread-safe)."""

    def __init__(self, params: ChunkerParams) -> None:
        self.params = params
        self._local = _PerThread(params)

    def _cdc(self) -> pyfastcdc.FastCDC:
        return self._local.cdc

    def chunk_bytes(self, data: bytes | memoryview) -> Iterator[bytes]:
        """Chunks of an in-memory buffer (zero-copy views are turned into bytes for safe sharing)."""
        if not len(data):
            return
        if len(data) <= self.params.min:  # FastCDC never cuts below its minimum
            yield bytes(data)
            return
        for chunk in self._cdc().cut_buf(data):
            yield bytes(chunk.data)

    def chunk_file(self, source: str | os.PathLike[str] | BinaryIO) -> Iterator[bytes]:
        """Chunks of a file, read sequentially; memory stays at about two maximum chunk sizes.

        `source` is a path or an open binary file object (read from its current position). A file
        of at most one maximum chunk is read whole and cut in memory: FastCDC's stream reader
        allocates (and zeroes) a buffer of two maximum chunks, 16 MiB, on every call (~1 ms),
        more than reading a file of a few hundred KiB costs. The cut points are the same.
        """
        if isinstance(source, (str, bytes, os.PathLike)):
            with open(source, "rb", buffering=0) as f:
                yield from self.chunk_file(f)
            return
        largest = self.params.max
        remaining = _remaining_size(source)
        if remaining is not None and remaining > largest:
            stream: BinaryIO | _Prefixed = source
        else:
            head = _read_upto(source, largest + 1)
            if len(head) <= largest:
                yield from self.chunk_bytes(head)
                return
            stream = _Prefixed(head, source)  # it grew, or a stream of unknown size
            del head
        for chunk in self._cdc().cut_stream(stream):
            yield bytes(chunk.data)
