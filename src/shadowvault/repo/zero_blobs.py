"""Zero blobs: how a hole (or any run of zero bytes) is referenced without storing or reading it.

A run of N zero bytes is written in a file's content as the ids of ordinary DATA blobs of zeros
whose sizes are powers of two (1 B to 8 MiB): as many 8 MiB blobs as fit, then one blob per set bit
of the rest, largest first. They are real blobs, stored once per repository like any other, so a
reader that knows nothing of them (an older version, a second implementation) reads correct bytes;
a reader that knows them recognizes the 24 ids (keyed, so computed per repository: ~10 ms of
hashing, done on first use) and never fetches, decrypts or writes them. See docs/repository.md,
"Holes and zero runs".
"""

from __future__ import annotations

import threading
from collections.abc import Callable

ZERO_BLOB_BITS = 24  # sizes 2**0 .. 2**23
LARGEST_ZERO_BLOB = 1 << (ZERO_BLOB_BITS - 1)  # 8 MiB: no chunker cuts a larger chunk
ZEROS = bytes(LARGEST_ZERO_BLOB)  # shared, read-only: compared against, never copied


def zero_run_sizes(length: int) -> list[int]:
    """The blob sizes that spell a run of `length` zero bytes, in content order."""
    sizes = [LARGEST_ZERO_BLOB] * (length // LARGEST_ZERO_BLOB)
    rest = length % LARGEST_ZERO_BLOB
    sizes.extend(1 << bit for bit in range(ZERO_BLOB_BITS - 2, -1, -1) if rest & (1 << bit))
    return sizes


def is_zeros(data: bytes | memoryview) -> bool:
    """Whether every byte is zero: a memcmp against ZEROS that stops at the first byte that is not
    (`bytes.startswith` compares without copying; comparing memoryviews goes byte by byte)."""
    if len(data) <= LARGEST_ZERO_BLOB:  # every chunk: one call, no generator
        return ZEROS.startswith(data)
    view = memoryview(data)
    return all(
        ZEROS.startswith(view[at : at + LARGEST_ZERO_BLOB]) for at in range(0, len(view), LARGEST_ZERO_BLOB)
    )


class ZeroBlobs:
    """The repository's zero blob ids (thread-safe; computed on first use)."""

    def __init__(self, blob_id: Callable[[bytes | memoryview], bytes]) -> None:
        self._blob_id = blob_id
        self._lock = threading.Lock()
        self._by_size: list[bytes] = []
        self._sizes: dict[bytes, int] = {}

    def _ensure(self) -> None:
        if self._by_size:
            return
        with self._lock:
            if self._by_size:
                return
            zeros = memoryview(ZEROS)
            by_size = [self._blob_id(zeros[: 1 << bit]) for bit in range(ZERO_BLOB_BITS)]
            self._sizes = {blob_id: 1 << bit for bit, blob_id in enumerate(by_size)}
            self._by_size = by_size

    def size_of(self, blob_id: bytes) -> int | None:
        """The length of the zero run `blob_id` stands for; None for any other blob."""
        self._ensure()
        return self._sizes.get(blob_id)

    def id_of(self, size: int) -> bytes:
        """The id of the zero blob of `size` bytes (a power of two up to LARGEST_ZERO_BLOB)."""
        self._ensure()
        return self._by_size[size.bit_length() - 1]

    def run(self, length: int) -> list[bytes]:
        """The ids that spell `length` zero bytes (see `zero_run_sizes`)."""
        return [self.id_of(size) for size in zero_run_sizes(length)]
