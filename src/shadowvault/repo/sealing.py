"""Sealing blobs: AES-256-GCM with random nonces under the master key, ids keyed BLAKE3.

What a blob's bytes become in a pack (zstd when smaller, then sealed under its type and id), for the
backup's process and its seal workers alike. Apart from the key files (crypto.py: scrypt, JSON) and
the documents (format.py: msgspec) so that a seal worker process (archive/seal_worker.py) imports
only AES-GCM, BLAKE3 and zstd. See docs/repository.md, "Keys and encryption".
"""

from __future__ import annotations

import enum
import os
import threading

import blake3

from shadowvault.errors import IntegrityError
from shadowvault.repo.compression import compress_if_smaller
from shadowvault.repo.master_key import NONCE_SIZE as NONCE_SIZE
from shadowvault.repo.master_key import MasterKey as MasterKey  # re-exported with what seals under it

TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE


class BlobType(enum.IntEnum):
    DATA = 0
    TREE = 1


class _NoncePool(threading.local):
    """Random nonces drawn from the kernel 4096 at a time, per thread: one getrandom call per blob
    was a tenth of a small file's system calls. The same bytes os.urandom gives, only fetched in
    bulk; a forked child starts an empty pool, so parent and child never share one."""

    def __init__(self) -> None:
        self.pool = b""
        self.at = 0

    def take(self) -> bytes:
        if self.at + NONCE_SIZE > len(self.pool):
            self.pool, self.at = os.urandom(NONCE_SIZE * 4096), 0
        nonce = self.pool[self.at : self.at + NONCE_SIZE]
        self.at += NONCE_SIZE
        return nonce

    def forget(self) -> None:
        self.pool, self.at = b"", 0


_nonces = _NoncePool()
os.register_at_fork(after_in_child=_nonces.forget)


class Sealer:
    """Seals and opens objects under a master key. Thread-safe: AESGCM keeps no per-call state."""

    def __init__(self, key: MasterKey) -> None:
        # cryptography is imported with the first sealer (~8 MiB resident, its Rust and OpenSSL):
        # a command derives its key (kdf.py, scrypt: 32 MiB for a moment) before, while the
        # process is still small
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key.encrypt)
        self._invalid_tag = InvalidTag
        self._id_key = key.id_key

    def blob_id(self, data: bytes | memoryview) -> bytes:
        """The keyed BLAKE3 of a blob's plaintext (releases the GIL on large inputs)."""
        return blake3.blake3(data, key=self._id_key).digest()

    def seal(self, data: bytes | memoryview, aad: bytes) -> bytes:
        nonce = _nonces.take()
        return nonce + self._aead.encrypt(nonce, bytes(data) if isinstance(data, memoryview) else data, aad)

    def seal_parts(self, data: bytes | memoryview, aad: bytes) -> tuple[bytes, bytes]:
        """Like `seal`, as (nonce, ciphertext + tag): spares copying a large blob to join them."""
        nonce = _nonces.take()
        return nonce, self._aead.encrypt(nonce, data, aad)

    def open(self, sealed: bytes | memoryview, aad: bytes, what: str) -> bytes:
        """Decrypt and authenticate; IntegrityError naming `what` if it fails."""
        if len(sealed) < OVERHEAD:
            raise IntegrityError(f"{what} is truncated ({len(sealed)} bytes)")
        sealed = memoryview(sealed)
        try:
            return self._aead.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], aad)
        except self._invalid_tag as err:
            raise IntegrityError(
                f"{what} failed authentication (damaged, or not written with this key)"
            ) from err


def blob_aad(blob_type: int, blob_id: bytes) -> bytes:
    return b"sv1:blob:" + bytes([blob_type]) + blob_id


def seal_blob(
    sealer: Sealer, kind: int, blob_id: bytes, data: bytes | memoryview
) -> tuple[tuple[bytes, bytes], bool]:
    """A blob as a pack stores it: zstd when that makes it smaller, sealed under its type and id;
    (nonce, ciphertext) and whether it was compressed. The backup's process and the seal workers
    (archive/seal_worker.py) both use this, so their blobs cannot differ."""
    payload, compressed = compress_if_smaller(data)
    return sealer.seal_parts(payload, blob_aad(kind, blob_id)), compressed
