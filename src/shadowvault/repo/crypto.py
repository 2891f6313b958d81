"""Keys and sealed objects: AES-256-GCM with random nonces, master key wrapped by scrypt(password).

See docs/repository.md, "Keys and encryption".
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from dataclasses import dataclass

import blake3
import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from shadowvault.errors import IntegrityError
from shadowvault.typed_decoding import decode_msgpack

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE
KEY_AAD = b"sv1:key"
DEFAULT_SCRYPT = {"n": 1 << 15, "r": 8, "p": 1}


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


class _MasterKeyDoc(msgspec.Struct):
    encrypt: bytes
    id: bytes


@dataclass(frozen=True)
class MasterKey:
    """The repository's secrets: one key encrypts, the other keys the BLAKE3 blob ids."""

    encrypt: bytes
    id_key: bytes

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(32), os.urandom(32))


class Sealer:
    """Seals and opens objects under a master key. Thread-safe: AESGCM keeps no per-call state."""

    def __init__(self, key: MasterKey) -> None:
        self._aead = AESGCM(key.encrypt)
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
        except InvalidTag as err:
            raise IntegrityError(
                f"{what} failed authentication (damaged, or not written with this key)"
            ) from err


def _kek(password: bytes, salt: bytes, params: dict[str, int]) -> bytes:
    return Scrypt(salt=salt, length=32, n=params["n"], r=params["r"], p=params["p"]).derive(password)


def make_key_file(key: MasterKey, password: bytes, params: dict[str, int] | None = None) -> bytes:
    """The JSON key file wrapping `key` with `password`."""
    params = dict(params or DEFAULT_SCRYPT)
    salt = os.urandom(16)
    aead = AESGCM(_kek(password, salt, params))
    nonce = os.urandom(NONCE_SIZE)
    body = msgspec.msgpack.encode(_MasterKeyDoc(key.encrypt, key.id_key))
    doc = {
        "version": 1,
        "kdf": "scrypt",
        **params,
        "salt": base64.b64encode(salt).decode(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": socket.gethostname(),
        "username": _username(),
        "data": base64.b64encode(nonce + aead.encrypt(nonce, body, KEY_AAD)).decode(),
    }
    return json.dumps(doc, indent=2).encode() + b"\n"


def open_key_file(raw: bytes, password: bytes) -> MasterKey | None:
    """The master key if `password` opens this key file, None if it does not.

    Raises IntegrityError when the file is not a valid key file at all.
    """
    try:
        doc = json.loads(raw)
        if doc.get("kdf") != "scrypt":
            raise ValueError(f"unknown kdf {doc.get('kdf')!r}")
        params = {"n": int(doc["n"]), "r": int(doc["r"]), "p": int(doc["p"])}
        salt = base64.b64decode(doc["salt"])
        sealed = base64.b64decode(doc["data"])
    except (ValueError, KeyError, TypeError) as err:
        raise IntegrityError(f"invalid key file: {err}") from err
    try:
        body = AESGCM(_kek(password, salt, params)).decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], KEY_AAD)
    except (InvalidTag, ValueError):
        return None
    master = decode_msgpack(body, _MasterKeyDoc)
    return MasterKey(master.encrypt, master.id)


def _username() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return str(os.getuid())
