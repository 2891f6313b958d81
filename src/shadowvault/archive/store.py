"""What the archive layer needs from a repository: save, test and load blobs, and cut files into chunks.

Kept as a small protocol so that the archive code depends on four methods, not on the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Protocol

DATA = "data"
TREE = "tree"


class BlobStore(Protocol):
    def save_blob(self, kind: Any, data: bytes) -> bytes: ...

    def has_blob(self, blob_id: bytes) -> bool: ...

    def load_blob(self, blob_id: bytes) -> bytes: ...


Chunker = Callable[[BinaryIO], Iterator[bytes]]


def blob_kinds(store: Any) -> tuple[Any, Any]:
    """The (data, tree) kind values the store's save_blob expects."""
    try:
        from shadowvault.repo.format import BlobType

        return BlobType.DATA, BlobType.TREE
    except ImportError:
        return DATA, TREE


def chunker_for(store: Any) -> Chunker:
    """The store's own chunker (its parameters are part of the repository), or a FastCDC default."""
    for holder in (getattr(store, "chunker", None), store):
        own = getattr(holder, "chunk_file", None)
        if callable(own):
            return own
    return default_chunker


def single_chunk_limit(store: Any) -> int:
    """Files up to this size are one chunk whatever the cut points (FastCDC never cuts below its
    minimum), so they are read whole without starting a chunker (which costs ~0.3 ms per call)."""
    params = getattr(getattr(store, "chunker", None), "params", None)
    minimum = getattr(params, "min", None)
    return minimum if isinstance(minimum, int) else 0


def default_chunker(stream: BinaryIO) -> Iterator[bytes]:
    """FastCDC with 1 MiB average chunks; each chunk is copied out of the reader's reused buffer."""
    from pyfastcdc import FastCDC

    for chunk in FastCDC(1 << 20, min_size=256 << 10, max_size=4 << 20).cut_stream(stream):
        yield bytes(chunk.data)
