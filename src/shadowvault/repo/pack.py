"""Pack files: sealed blobs appended to a temp file, then a sealed header and its length.

pack = blob 1 || ... || blob N || sealed header || header length (4 bytes, little endian)
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import blake3
import msgspec

from shadowvault.errors import IntegrityError, RepositoryError
from shadowvault.repo.backend import Backend, open_private, storage_error
from shadowvault.repo.cache_dir import scratch_error
from shadowvault.repo.compression import decompress
from shadowvault.repo.format import PackBlob
from shadowvault.repo.sealing import Sealer, blob_aad

HEADER_AAD = b"sv1:pack-header"
SMALL_BLOB = 64 << 10  # below this, joining a sealed blob's parts costs less than a second write and hash
_header_encoder = msgspec.msgpack.Encoder()
_header_decoder = msgspec.msgpack.Decoder(list[PackBlob])


def open_blob(
    sealer: Sealer,
    blob_id: bytes,
    kind: int,
    sealed: bytes | memoryview,
    *,
    length: int,
    raw_length: int,
    compressed: bool,
    what: str,
) -> bytes:
    """A blob's verified plaintext from its sealed bytes in a pack: decrypted under its type and id,
    decompressed, and its keyed hash checked against its id (IntegrityError naming `what` else).
    The repository's reader and the restore's worker processes (archive/restore_worker.py) both
    use this, so what one accepts the other does."""
    if len(sealed) != length:
        raise IntegrityError(f"{what} is truncated")
    payload = sealer.open(sealed, blob_aad(kind, blob_id), what)
    data = decompress(payload, raw_length, what) if compressed else payload
    if len(data) != raw_length or sealer.blob_id(data) != blob_id:
        raise IntegrityError(f"{what} does not match its id")
    return data


def pack_name(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


@dataclass
class FinishedPack:
    id: str
    size: int
    blobs: list[PackBlob]
    path: Path


class PackWriter:
    """Builds one pack in a temp file, so a pack never sits whole in memory. Not thread-safe."""

    def __init__(self, backend: Backend) -> None:
        self.path = backend.temp_path()
        self._remote = backend.remote  # the temp file is then on a local disk, not the repository's
        try:
            self._file = open_private(self.path)
        except OSError as err:
            raise self._write_error(err, "a new pack") from err
        self._hash = blake3.blake3(max_threads=1)
        self.size = 0
        self.blobs: list[PackBlob] = []

    def add(
        self,
        blob_type: int,
        blob_id: bytes,
        sealed: bytes | tuple[bytes, ...],
        raw_length: int,
        compressed: bool,
    ) -> None:
        """Append one sealed blob, given whole or in parts (nonce, ciphertext)."""
        if isinstance(sealed, bytes):
            parts: tuple[bytes, ...] = (sealed,)
        elif len(sealed) > 1 and len(sealed[1]) < SMALL_BLOB:  # joined: one write, one hash update
            parts = (b"".join(sealed),)
        else:
            parts = sealed
        length = 0
        try:
            for part in parts:
                self._file.write(part)
                length += len(part)
        except OSError as err:
            self.abort()
            raise self._write_error(err, "a pack") from err
        for part in parts:
            self._hash.update(part)
        self.blobs.append(PackBlob(blob_type, blob_id, self.size, length, raw_length, compressed))
        self.size += length

    def finish(self, sealer: Sealer) -> FinishedPack:
        header = sealer.seal(_header_encoder.encode(self.blobs), HEADER_AAD)
        tail = header + struct.pack("<I", len(header))
        try:
            self._file.write(tail)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as err:
            self.abort()
            raise self._write_error(err, "a pack") from err
        self._hash.update(tail)
        return FinishedPack(self._hash.hexdigest(), self.size + len(tail), self.blobs, self.path)

    def _write_error(self, err: OSError, what: str) -> RepositoryError:
        return scratch_error(err, self.path.parent) if self._remote else storage_error(err, what)

    def abort(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass
        try:
            os.unlink(self.path)
        except OSError:
            pass


def parse_header(sealer: Sealer, pack_bytes_tail: bytes, pack_size: int, what: str) -> list[PackBlob]:
    """Decode a pack's header from the pack's last bytes (at least header + 4)."""
    if len(pack_bytes_tail) < 4:
        raise IntegrityError(f"{what} is truncated")
    (header_len,) = struct.unpack("<I", pack_bytes_tail[-4:])
    if header_len + 4 > pack_size or header_len + 4 > len(pack_bytes_tail):
        raise IntegrityError(f"{what} has an invalid header length {header_len}")
    sealed = pack_bytes_tail[-4 - header_len : -4]
    plain = sealer.open(sealed, HEADER_AAD, f"header of {what}")
    try:
        blobs = _header_decoder.decode(plain)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise IntegrityError(f"header of {what} cannot be decoded: {err}") from err
    limit = pack_size - 4 - header_len
    for blob in blobs:
        if blob.offset < 0 or blob.offset + blob.length > limit:
            raise IntegrityError(f"header of {what} points outside the pack")
    return blobs


def read_header(backend: Backend, sealer: Sealer, pack_id: str) -> list[PackBlob]:
    """Read just a pack's header (two range reads)."""
    name = pack_name(pack_id)
    size = backend.stat(name).size
    if size < 4:
        raise IntegrityError(f"pack {pack_id} is truncated")
    (header_len,) = struct.unpack("<I", backend.load(name, size - 4, 4))
    if header_len + 4 > size:
        raise IntegrityError(f"pack {pack_id} has an invalid header length")
    tail = backend.load(name, size - 4 - header_len, header_len + 4)
    return parse_header(sealer, tail, size, f"pack {pack_id}")
