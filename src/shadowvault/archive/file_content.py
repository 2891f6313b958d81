"""A stored file's bytes, for every reader of file content that is not a restore (dump, cat, copy...).

A file's content is a list of blob ids; some of them stand for runs of zeros (holes, and chunks that
were all zeros: repo/zero_blobs.py). Those are never loaded: their zeros come from memory. Call
`content_pieces` (in order, for streaming) or `content_layout` (offsets, for random access) rather
than `load_blob` on each id, so a 1 TiB sparse file costs what its data costs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from shadowvault.errors import IntegrityError
from shadowvault.repo.zero_blobs import ZEROS, ZeroBlobs


class ContentSource(Protocol):
    """What reading a file's content needs from a repository."""

    @property
    def zero_blobs(self) -> ZeroBlobs: ...

    def load_blob(self, blob_id: bytes) -> bytes: ...

    def blob_size(self, blob_id: bytes) -> int | None: ...


@dataclass(frozen=True)
class Piece:
    """One blob of a file: where it starts, how long it is, whether it is a run of zeros."""

    blob_id: bytes
    offset: int
    length: int
    zeros: bool


def zeros_view(length: int) -> memoryview:
    """`length` zero bytes without allocating (at most a zero blob's size)."""
    return memoryview(ZEROS)[:length]


def content_pieces(source: ContentSource, content: list[bytes]) -> Iterator[bytes | memoryview]:
    """The file's bytes, blob by blob in order; a run of zeros is a read-only view of zeros."""
    zero_blobs = source.zero_blobs
    for blob_id in content:
        size = zero_blobs.size_of(blob_id)
        yield zeros_view(size) if size is not None else source.load_blob(blob_id)


def content_layout(source: ContentSource, content: list[bytes]) -> list[Piece]:
    """Where each blob of the file lies (sizes from the index, zero runs from their ids; no data is
    read unless the index does not know a blob, which is then loaded: NotFoundError if missing)."""
    zero_blobs = source.zero_blobs
    pieces: list[Piece] = []
    offset = 0
    for blob_id in content:
        zeros = zero_blobs.size_of(blob_id)
        length = zeros if zeros is not None else source.blob_size(blob_id)
        if length is None:
            length = len(source.load_blob(blob_id))
        pieces.append(Piece(blob_id, offset, length, zeros is not None))
        offset += length
    return pieces


def read_piece(source: ContentSource, piece: Piece) -> bytes | memoryview:
    """One piece's bytes (zeros from memory), checked against the length its layout gave it."""
    if piece.zeros:
        return zeros_view(piece.length)
    data = source.load_blob(piece.blob_id)
    if len(data) != piece.length:
        raise IntegrityError(f"blob {piece.blob_id.hex()[:16]} is not the size its index says")
    return data
