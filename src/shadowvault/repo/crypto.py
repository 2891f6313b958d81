"""Key files: the master key (sealing.py) wrapped by scrypt(password) (kdf.py) and AES-256-GCM, as JSON.

See docs/repository.md, "Keys and encryption".
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time

import msgspec

from shadowvault.errors import IntegrityError
from shadowvault.repo import kdf
from shadowvault.repo.master_key import NONCE_SIZE, MasterKey
from shadowvault.typed_decoding import decode_msgpack

KEY_AAD = b"sv1:key"
DEFAULT_SCRYPT = {"n": 1 << 15, "r": 8, "p": 1}


class _MasterKeyDoc(msgspec.Struct):
    encrypt: bytes
    id: bytes


def make_key_file(key: MasterKey, password: bytes, params: dict[str, int] | None = None) -> bytes:
    """The JSON key file wrapping `key` with `password`."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    params = dict(params or DEFAULT_SCRYPT)
    salt = os.urandom(16)
    aead = AESGCM(kdf.scrypt(password, salt, (params["n"], params["r"], params["p"])))
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
        salt, params, sealed = kdf.key_file_kdf(raw)
    except (ValueError, KeyError, TypeError) as err:
        raise IntegrityError(f"invalid key file: {err}") from err
    try:
        kek = kdf.derive(password, salt, params)
    except ValueError as err:  # parameters out of range, or beyond kdf.SCRYPT_MAX_MEMORY
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
