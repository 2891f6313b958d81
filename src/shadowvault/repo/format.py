"""The small documents stored in the repository and how they are framed (flag byte, zstd, msgpack).

See docs/repository.md for the contract; this module is its code.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec
import zstandard

from shadowvault.errors import IntegrityError
from shadowvault.repo.compression import ZSTD_LEVEL, compress_if_smaller, decompress_bounded
from shadowvault.repo.file_ids import file_id as file_id  # the names of stored files
from shadowvault.repo.sealing import BlobType as BlobType  # defined with what seals under it
from shadowvault.typed_decoding import decode_msgpack

FORMAT_VERSION = 1
T = TypeVar("T")


# What FastCDC (pyfastcdc) accepts: a config is repository input, and parameters outside these
# ranges made every command, a read-only one too, end in an internal error when the chunker was
# built. Such a config is damaged (`repair config` writes a new one).
ChunkMin = Annotated[int, msgspec.Meta(ge=64, le=1 << 20)]
ChunkAvg = Annotated[int, msgspec.Meta(ge=256, le=4 << 20)]
ChunkMax = Annotated[int, msgspec.Meta(ge=1024, le=16 << 20)]
ChunkSeed = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]  # shifted left once in a 64-bit word


class ChunkerParams(msgspec.Struct):
    min: ChunkMin
    avg: ChunkAvg
    max: ChunkMax
    seed: ChunkSeed

    def __post_init__(self) -> None:
        if not self.min <= self.avg <= self.max:
            raise ValueError(f"chunker sizes out of order: min {self.min}, avg {self.avg}, max {self.max}")


class Config(msgspec.Struct, kw_only=True):
    version: int
    id: str
    created: float
    chunker: ChunkerParams
    pack_size: int
    compression: str = f"zstd:{ZSTD_LEVEL}"


BLOB_ID_LENGTH = 32  # bytes of a blob id (keyed BLAKE3-256)
BlobIdField = Annotated[bytes, msgspec.Meta(min_length=BLOB_ID_LENGTH, max_length=BLOB_ID_LENGTH)]
U32 = Annotated[int, msgspec.Meta(ge=0, le=(1 << 32) - 1)]
BlobTypeField = Annotated[int, msgspec.Meta(ge=int(min(BlobType)), le=int(max(BlobType)))]


class PackBlob(msgspec.Struct, array_like=True):
    """One blob inside a pack: where it is and how it was stored. The sizes are checked when an
    index file or pack header is decoded: ids are joined 32 bytes apiece, locations kept in
    32-bit arrays and the type in one byte with the compressed flag (repo/index_sorted.py, check),
    so a crafted entry is a damaged file, not a misaligned index."""

    type: BlobTypeField
    id: BlobIdField
    offset: U32
    length: U32  # of the sealed bytes in the pack
    raw_length: U32  # of the plaintext
    compressed: bool


class Pending(msgspec.Struct):
    since: float
    waits_for: list[str] | None = None  # live sessions prune must outlive; None = "any live session"


# A pack's id as its file is named (lower-case hex BLAKE3-256), and its size: checked when an index
# file is decoded, so a crafted one is a damaged index file (skipped, named, rebuilt by `repair
# index`), not an error that stopped every command, `repair index` itself included.
PackId = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
PackSize = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]


class IndexPack(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: PackId
    size: PackSize
    blobs: list[PackBlob]
    pending: Pending | None = None


class IndexFile(msgspec.Struct, kw_only=True):
    packs: list[IndexPack]


PID_MAX = 1 << 22  # Linux's largest pid_max: a pid beyond it ended prune in an OverflowError
Pid = Annotated[int, msgspec.Meta(ge=1, le=PID_MAX)]


class SessionDoc(msgspec.Struct, kw_only=True):
    kind: str  # backup | prune | write
    host: str
    pid: Pid
    start: float
    boot_id: str = ""


def encode_document(obj: object) -> bytes:
    """flag || body: msgpack, zstd-compressed when that helps."""
    body = msgspec.msgpack.encode(obj)
    packed, compressed = compress_if_smaller(body)
    return (b"\x01" if compressed else b"\x00") + bytes(packed)


MAX_DOCUMENT_BYTES = 256 << 20  # far above any document written (an index file of 50,000 blobs: ~5 MB)


def decode_document(plain: bytes, type_: type[T], what: str) -> T:
    """A document's plaintext decoded as `type_`; a compressed body may not expand past
    MAX_DOCUMENT_BYTES, whatever its frame header claims."""
    if not plain:
        raise IntegrityError(f"{what} is empty")
    flag, body = plain[0], plain[1:]
    try:
        if flag == 1:
            body = decompress_bounded(body, MAX_DOCUMENT_BYTES, what)
        elif flag != 0:
            raise IntegrityError(f"{what} has unknown encoding flag {flag}")
        return decode_msgpack(body, type_)
    except (zstandard.ZstdError, msgspec.DecodeError, msgspec.ValidationError) as err:
        raise IntegrityError(f"{what} cannot be decoded: {err}") from err
