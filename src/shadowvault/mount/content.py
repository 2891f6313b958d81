"""A file's content read at any offset: only the blobs that hold the asked range are loaded.

A file is a list of DATA blobs. Their cumulative end offsets (from the index's sizes, no data read)
are kept per open file, and a read bisects them to the first blob it needs. Decoded blobs are shared
by every open file through a small LRU bounded by bytes, so readers of the same region (or the
kernel's read-ahead asking for the next 128 KiB of a 1 MiB blob) decode a blob once. A blob that
stands for a run of zeros (a hole) is never loaded: its zeros come from memory.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Protocol

from shadowvault.errors import IntegrityError
from shadowvault.repo.reader import BlobCache
from shadowvault.repo.zero_blobs import ZEROS, ZeroBlobs

CACHE_BYTES = 64 << 20  # decoded blobs kept: eight of the largest chunks


class BlobStore(Protocol):
    @property
    def zero_blobs(self) -> ZeroBlobs: ...

    def blob_size(self, blob_id: bytes) -> int | None: ...

    def load_blob(self, blob_id: bytes) -> bytes: ...

    def reload_index(self) -> None: ...


class Blobs:
    """Blob sizes and decoded blobs for the view (thread-safe, as the repository's reads are)."""

    def __init__(self, store: BlobStore, cache_bytes: int = CACHE_BYTES) -> None:
        self._store = store
        self._cache = BlobCache(cache_bytes)

    def sizes(self, blob_ids: list[bytes]) -> list[int]:
        """Each blob's plaintext size; the index is re-read once if a blob is newer than it."""
        sizes = [self._size(b) for b in blob_ids]
        if None in sizes:
            self._store.reload_index()  # a snapshot made after the view was mounted
            sizes = [self._size(b) for b in blob_ids]
        known: list[int] = []
        for blob_id, size in zip(blob_ids, sizes, strict=True):
            known.append(len(self.load(blob_id)) if size is None else size)  # unknown: NotFoundError
        return known

    def _size(self, blob_id: bytes) -> int | None:
        zeros = self._store.zero_blobs.size_of(blob_id)
        return zeros if zeros is not None else self._store.blob_size(blob_id)

    def load(self, blob_id: bytes) -> bytes | memoryview:
        zeros = self._store.zero_blobs.size_of(blob_id)
        if zeros is not None:
            return memoryview(ZEROS)[:zeros]
        data = self._cache.get(blob_id)
        if data is None:
            data = self._store.load_blob(blob_id)
            self._cache.put(blob_id, data)
        return data


class FileContent:
    """One open file: where each of its blobs starts and ends."""

    def __init__(self, blobs: Blobs, content: list[bytes]) -> None:
        self._blobs = blobs
        self._content = content
        self._ends = list(itertools.accumulate(blobs.sizes(content)))
        self.size = self._ends[-1] if self._ends else 0

    def read(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes from `offset` (fewer at the end of the file)."""
        end = min(offset + size, self.size)
        if offset < 0 or offset >= end:
            return b""
        index = bisect.bisect_right(self._ends, offset)  # the first blob ending after `offset`
        parts: list[bytes | memoryview] = []
        position = offset
        while position < end:
            start = self._ends[index - 1] if index else 0
            data = self._blobs.load(self._content[index])
            if len(data) != self._ends[index] - start:
                raise IntegrityError(f"blob {self._content[index].hex()[:16]} is not the size its index says")
            parts.append(data[position - start : min(end, self._ends[index]) - start])
            position = self._ends[index]
            index += 1
        return b"".join(parts)
