"""The small documents stored in the repository and how they are framed (flag byte, zstd, msgpack).

See docs/repository.md for the contract; this module is its code.
"""

from __future__ import annotations

import enum
import threading
from typing import Annotated, TypeVar

import blake3
import msgspec
import zstandard

from shadowvault.errors import IntegrityError
from shadowvault.typed_decoding import decode_msgpack

FORMAT_VERSION = 1
ZSTD_LEVEL = 3
T = TypeVar("T")


class BlobType(enum.IntEnum):
    DATA = 0
    TREE = 1


class ChunkerParams(msgspec.Struct):
    min: int
    avg: int
    max: int
    seed: int


class Config(msgspec.Struct, kw_only=True):
    version: int
    id: str
    created: float
    chunker: ChunkerParams
    pack_size: int
    compression: str = f"zstd:{ZSTD_LEVEL}"


BlobIdField = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
U32 = Annotated[int, msgspec.Meta(ge=0, le=(1 << 32) - 1)]
BlobTypeField = Annotated[int, msgspec.Meta(ge=int(min(BlobType)), le=int(max(BlobType)))]


class PackBlob(msgspec.Struct, array_like=True):
    """One blob inside a pack: where it is and how it was stored. The sizes are checked when an
    index file or pack header is decoded: ids are joined 32 bytes apiece, locations kept in
    32-bit arrays and the type in one byte with the compressed flag (repo/index.py, check), so a
    crafted entry is a damaged file, not a misaligned index."""

    type: BlobTypeField
    id: BlobIdField
    offset: U32
    length: U32  # of the sealed bytes in the pack
    raw_length: U32  # of the plaintext
    compressed: bool


class Pending(msgspec.Struct):
    since: float
    waits_for: list[str] | None = None  # live sessions prune must outlive; None = "any live session"


class IndexPack(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    size: int
    blobs: list[PackBlob]
    pending: Pending | None = None


class IndexFile(msgspec.Struct, kw_only=True):
    packs: list[IndexPack]


class SessionDoc(msgspec.Struct, kw_only=True):
    kind: str  # backup | prune | write
    host: str
    pid: int
    start: float
    boot_id: str = ""


def file_id(data: bytes) -> str:
    """A stored file's name: unkeyed BLAKE3 of its bytes (checkable with b3sum, no password)."""
    return blake3.blake3(data).hexdigest()


class _Codecs(threading.local):
    """zstd contexts, one pair per thread (instances are not thread-safe); made on first use."""

    def __init__(self) -> None:
        self.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self.dctx = zstandard.ZstdDecompressor()


_codecs = _Codecs()


def compressor() -> zstandard.ZstdCompressor:
    """This thread's zstd compressor."""
    return _codecs.cctx


def decompressor() -> zstandard.ZstdDecompressor:
    return _codecs.dctx


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
        if len(compressor().compress(sample)) < INCOMPRESSIBLE * len(sample):
            return False
    return True


def compress_if_smaller(data: bytes | memoryview) -> tuple[bytes | memoryview, bool]:
    """zstd-compress `data`; keep the original when compression does not shrink it."""
    if len(data) < 64 or looks_incompressible(data):
        return data, False
    packed = compressor().compress(data)
    if len(packed) >= len(data):
        return data, False
    return packed, True


def decompress(data: bytes, raw_length: int, what: str) -> bytes:
    try:
        out = decompressor().decompress(data, max_output_size=raw_length)
    except zstandard.ZstdError as err:
        raise IntegrityError(f"{what} does not decompress: {err}") from err
    if len(out) != raw_length:
        raise IntegrityError(f"{what} has {len(out)} bytes, expected {raw_length}")
    return out


def encode_document(obj: object) -> bytes:
    """flag || body: msgpack, zstd-compressed when that helps."""
    body = msgspec.msgpack.encode(obj)
    packed, compressed = compress_if_smaller(body)
    return (b"\x01" if compressed else b"\x00") + bytes(packed)


def decode_document(plain: bytes, type_: type[T], what: str) -> T:
    if not plain:
        raise IntegrityError(f"{what} is empty")
    flag, body = plain[0], plain[1:]
    try:
        if flag == 1:
            body = zstandard.ZstdDecompressor().decompress(body)
        elif flag != 0:
            raise IntegrityError(f"{what} has unknown encoding flag {flag}")
        return decode_msgpack(body, type_)
    except (zstandard.ZstdError, msgspec.DecodeError, msgspec.ValidationError) as err:
        raise IntegrityError(f"{what} cannot be decoded: {err}") from err
