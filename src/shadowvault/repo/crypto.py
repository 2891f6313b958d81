"""Key files: the master key (sealing.py) wrapped by scrypt(password) and AES-256-GCM, as JSON.

See docs/repository.md, "Keys and encryption".
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import time

import msgspec

from shadowvault.errors import IntegrityError
from shadowvault.repo.master_key import NONCE_SIZE, MasterKey
from shadowvault.typed_decoding import decode_msgpack

KEY_AAD = b"sv1:key"
DEFAULT_SCRYPT = {"n": 1 << 15, "r": 8, "p": 1}


class _MasterKeyDoc(msgspec.Struct):
    encrypt: bytes
    id: bytes


SCRYPT_MAX_MEMORY = 1 << 30  # a key file asking for more is refused, not obeyed (it is repository input)


def _kek(password: bytes, salt: bytes, params: dict[str, int]) -> bytes:
    """scrypt through Python's own OpenSSL binding: the KDF of every command that opens a repository
    (32 MiB for a moment with the default parameters) runs before cryptography is loaded (sealing.py)."""
    n, r, p = params["n"], params["r"], params["p"]
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAX_MEMORY, dklen=32)


def make_key_file(key: MasterKey, password: bytes, params: dict[str, int] | None = None) -> bytes:
    """The JSON key file wrapping `key` with `password`."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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
        kek = _kek(password, salt, params)
    except ValueError as err:  # parameters out of range, or beyond SCRYPT_MAX_MEMORY
        raise IntegrityError(f"invalid key file: scrypt parameters refused ({err})") from err
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        body = AESGCM(kek).decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], KEY_AAD)
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
