"""zstd for blobs and documents: shared compression contexts, and the test that skips noise.

Kept apart from the repository's documents (format.py, msgspec) so that a seal worker process
(archive/seal_worker.py) imports only zstd: each module a worker loads is memory a backup holds
twice.
"""

from __future__ import annotations

import threading

import zstandard

from shadowvault.errors import IntegrityError

# Level 2, not 3: on the bench's first backup (2 GiB / 100k files) 10-20 % less CPU for a repository
# 0.3 % larger; on text 1.7x the speed (115 vs 68 MiB/s) for 2 % more output (4 % on /usr/share/doc).
# Any level reads the same: a reader needs none, so a repository's blobs may mix levels.
ZSTD_LEVEL = 2


class _Compressors:
    """zstd compression contexts shared by every thread, as many as compressions ever ran at once.

    A context is not thread-safe, and it keeps the workspace of the largest input it compressed
    (~3.5 MiB after a 2 MiB chunk): one per thread held nine in a backup's process (the walk, blob,
    reader, commit and index threads), four of them that large. One is taken for each compression
    and given back (list.pop and append are atomic)."""

    def __init__(self) -> None:
        self._free: list[zstandard.ZstdCompressor] = []

    def compress(self, data: bytes | memoryview) -> bytes:
        try:
            cctx = self._free.pop()
        except IndexError:
            cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        try:
            return cctx.compress(data)
        finally:
            self._free.append(cctx)


class _Decompressors(threading.local):
    """A zstd decompression context per thread (~100 KiB: decompressing into a buffer of the known
    size keeps no window); made on first use."""

    def __init__(self) -> None:
        self.dctx = zstandard.ZstdDecompressor()


_compressors = _Compressors()
_decompressors = _Decompressors()
compress = _compressors.compress


def decompressor() -> zstandard.ZstdDecompressor:
    return _decompressors.dctx


SAMPLE = 32 << 10
INCOMPRESSIBLE = 0.98  # a sample that zstd shrinks by less than 2 % marks the chunk as noise


def looks_incompressible(data: bytes | memoryview) -> bool:
    """Five 32 KiB samples spread over the chunk (near its start and end, and at each quarter) that
    zstd cannot shrink: skip the whole chunk. Compressed media and ciphertext are most of the bytes
    in a backup, and compressing them for nothing cost more than hashing and encryption together.
    Two samples (start and middle) judged a chunk of text around a run of random bytes (a region of
    a file overwritten with compressed data) incompressible, and stored its text raw."""
    if len(data) < 8 * SAMPLE:
        return False
    view = memoryview(data)
    size = len(data)
    for start in (SAMPLE, size // 4, size // 2, 3 * size // 4, size - 2 * SAMPLE):
        sample = view[start : start + SAMPLE]
        if len(compress(sample)) < INCOMPRESSIBLE * len(sample):
            return False
    return True


def compress_if_smaller(data: bytes | memoryview) -> tuple[bytes | memoryview, bool]:
    """zstd-compress `data`; keep the original when compression does not shrink it."""
    if len(data) < 64 or looks_incompressible(data):
        return data, False
    packed = compress(data)
    if len(packed) >= len(data):
        return data, False
    return packed, True


def decompress(data: bytes, raw_length: int, what: str) -> bytes:
    """A blob's zstd frame, which must hold `raw_length` bytes (the index's word, checked first:
    zstd sizes its output by the frame's own header and ignores any bound when the header has one).
    A frame with no size in its header (never written so) is read in steps: given the bound,
    zstd reserved all of it at once, up to 4 GiB for an index entry's claim."""
    try:
        claimed = zstandard.frame_content_size(data)
        if claimed == -1:
            out = decompress_bounded(data, raw_length, what)
        elif claimed != raw_length:
            raise IntegrityError(f"{what} has {claimed} bytes, expected {raw_length}")
        else:
            out = decompressor().decompress(data, max_output_size=raw_length)
    except zstandard.ZstdError as err:
        raise IntegrityError(f"{what} does not decompress: {err}") from err
    if len(out) != raw_length:
        raise IntegrityError(f"{what} has {len(out)} bytes, expected {raw_length}")
    return out


STREAM_READ = 1 << 20


def decompress_bounded(data: bytes, limit: int, what: str) -> bytes:
    """A zstd frame of unknown length that may not hold more than `limit` bytes: a frame whose header
    claims more is refused before anything is allocated, one with no size in its header is read
    a MiB at a time until it ends or passes the limit."""
    try:
        claimed = zstandard.frame_content_size(data)
        if claimed > limit:
            raise IntegrityError(f"{what} would decompress to {claimed} bytes, more than {limit}")
        if claimed >= 0:
            return decompressor().decompress(data)
        parts: list[bytes] = []
        total = 0
        with decompressor().stream_reader(data) as reader:
            while part := reader.read(STREAM_READ):
                total += len(part)
                if total > limit:
                    raise IntegrityError(f"{what} decompresses to more than {limit} bytes")
                parts.append(part)
        return b"".join(parts)
    except zstandard.ZstdError as err:
        raise IntegrityError(f"{what} does not decompress: {err}") from err
