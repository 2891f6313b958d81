"""The key-encryption key of a key file: scrypt(password, salt) with the file's parameters.

scrypt is the costly step of every command that opens a repository (32 MiB for a moment with the
default parameters), so it can be run ahead: `derive_ahead` keeps a result that `derive` hands out
once, for exactly the same password, salt and parameters (cli/launch.py uses it before the command
line's modules are loaded). Light on purpose: json, base64 and hashlib, nothing of our own.
See docs/repository.md, "Keys and encryption".
"""

from __future__ import annotations

import base64
import hashlib
import json

SCRYPT_MAX_MEMORY = 1 << 30  # a key file asking for more is refused, not obeyed (it is repository input)

KdfParams = tuple[int, int, int]  # scrypt's n, r, p

_derived_ahead: dict[tuple[bytes, bytes, KdfParams], bytes] = {}


def key_file_kdf(raw: bytes) -> tuple[bytes, KdfParams, bytes]:
    """A key file's salt, scrypt parameters and sealed master key.

    Raises ValueError, KeyError or TypeError when `raw` is not a key file (repository input)."""
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if doc.get("kdf") != "scrypt":
        raise ValueError(f"unknown kdf {doc.get('kdf')!r}")
    params = (int(doc["n"]), int(doc["r"]), int(doc["p"]))
    return base64.b64decode(doc["salt"]), params, base64.b64decode(doc["data"])


def scrypt(password: bytes, salt: bytes, params: KdfParams) -> bytes:
    """scrypt through Python's own OpenSSL binding (cryptography is loaded later, sealing.py says why).

    Raises ValueError for parameters out of range or beyond SCRYPT_MAX_MEMORY."""
    n, r, p = params
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAX_MEMORY, dklen=32)


def derive_ahead(password: bytes, salt: bytes, params: KdfParams) -> None:
    """Run scrypt now and keep the result for the one `derive` with the same inputs."""
    _derived_ahead[(password, salt, params)] = scrypt(password, salt, params)


def derive(password: bytes, salt: bytes, params: KdfParams) -> bytes:
    """The key-encryption key: the one derived ahead for these inputs (handed out once), else scrypt."""
    ahead = _derived_ahead.pop((password, salt, params), None)
    return ahead if ahead is not None else scrypt(password, salt, params)
