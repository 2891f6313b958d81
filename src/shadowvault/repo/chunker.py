"""Content-defined chunking with FastCDC, seeded per repository so chunk sizes fingerprint nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

import pyfastcdc

from shadowvault.repo.format import ChunkerParams

MIN_SIZE = 512 << 10
AVG_SIZE = 1 << 20
MAX_SIZE = 8 << 20


def default_params(seed: int) -> ChunkerParams:
    return ChunkerParams(min=MIN_SIZE, avg=AVG_SIZE, max=MAX_SIZE, seed=seed)


class Chunker:
    """Cuts files and buffers into chunks with the repository's parameters. Safe to share: every
    call uses its own FastCDC instance (they are not thread-safe)."""

    def __init__(self, params: ChunkerParams) -> None:
        self.params = params

    def _cdc(self) -> pyfastcdc.FastCDC:
        p = self.params
        return pyfastcdc.FastCDC(p.avg, min_size=p.min, max_size=p.max, seed=p.seed)

    def chunk_bytes(self, data: bytes | memoryview) -> Iterator[bytes]:
        """Chunks of an in-memory buffer (zero-copy views are turned into bytes for safe sharing)."""
        if not len(data):
            return
        for chunk in self._cdc().cut_buf(data):
            yield bytes(chunk.data)

    def chunk_file(self, source: str | os.PathLike[str] | BinaryIO) -> Iterator[bytes]:
        """Chunks of a file, read sequentially; memory stays at about two maximum chunk sizes.

        `source` is a path or an open binary file object (read from its current position).
        """
        if isinstance(source, (str, bytes, os.PathLike)):
            with open(source, "rb", buffering=0) as f:
                yield from self.chunk_file(f)
            return
        for chunk in self._cdc().cut_stream(source):
            yield bytes(chunk.data)
