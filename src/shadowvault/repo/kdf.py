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

# A key file asking scrypt for more work than this (128 * n * r * p bytes' worth: p runs one after
# another, so it is time as much as memory) is refused, not obeyed: it is repository input, which
# anyone who may write the storage can plant without a password, and every command tries every key
# file. 256 MiB is 8 times the default parameters (n 32768, r 8, p 1): ~1 s here. 1 GiB at any p
# let a planted key file hold every command for minutes or take a GiB of memory.
SCRYPT_MAX_MEMORY = 256 << 20

KdfParams = tuple[int, int, int]  # scrypt's n, r, p

_derived_ahead: dict[tuple[bytes, bytes, KdfParams], bytes] = {}


def key_file_kdf(raw: bytes) -> tuple[bytes, KdfParams, bytes]:
    """A key file's salt, scrypt parameters and sealed master key.

    Raises ValueError, KeyError or TypeError when `raw` is not a key file (repository input)."""
    try:
        doc = json.loads(raw)
    except RecursionError as err:  # nested past the interpreter's limit: not a key file
        raise ValueError("nested too deeply") from err
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if doc.get("kdf") != "scrypt":
        raise ValueError(f"unknown kdf {doc.get('kdf')!r}")
    params = checked_params(doc["n"], doc["r"], doc["p"])
    salt, data = doc["salt"], doc["data"]
    if not isinstance(salt, str) or not isinstance(data, str):
        raise TypeError("salt and data must be base64 text")
    return base64.b64decode(salt, validate=True), params, base64.b64decode(data, validate=True)


def checked_params(n: object, r: object, p: object) -> KdfParams:
    """scrypt's parameters as a key file gives them: whole numbers (not 1e999, not true), n a power of
    two above 1, r and p at least 1, and 128 * n * r * p within SCRYPT_MAX_MEMORY."""
    for name, value in (("n", n), ("r", r), ("p", p)):
        if type(value) is not int or value < 1:
            raise ValueError(f"scrypt parameter {name} must be a whole number of 1 or more, not {value!r}")
    assert isinstance(n, int) and isinstance(r, int) and isinstance(p, int)
    if n < 2 or n & (n - 1):
        raise ValueError(f"scrypt parameter n must be a power of two, not {n}")
    if 128 * n * r * p > SCRYPT_MAX_MEMORY:
        raise ValueError(
            f"scrypt parameters n={n} r={r} p={p} ask for more than {SCRYPT_MAX_MEMORY >> 20} MiB of work"
        )
    return n, r, p


def scrypt(password: bytes, salt: bytes, params: KdfParams) -> bytes:
    """scrypt through Python's own OpenSSL binding (cryptography is loaded later, sealing.py says why).

    Raises ValueError for parameters out of range or beyond SCRYPT_MAX_MEMORY."""
    n, r, p = params
    # maxmem bounds OpenSSL's own count, 128 * r * (n + p + 2) and a little: room above our bound
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=2 * SCRYPT_MAX_MEMORY, dklen=32)


def derive_ahead(password: bytes, salt: bytes, params: KdfParams) -> None:
    """Run scrypt now and keep the result for the one `derive` with the same inputs."""
    _derived_ahead[(password, salt, params)] = scrypt(password, salt, params)


def derive(password: bytes, salt: bytes, params: KdfParams) -> bytes:
    """The key-encryption key: the one derived ahead for these inputs (handed out once), else scrypt."""
    ahead = _derived_ahead.pop((password, salt, params), None)
    return ahead if ahead is not None else scrypt(password, salt, params)
