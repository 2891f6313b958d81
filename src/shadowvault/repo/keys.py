"""Key files: the master key wrapped per password; unlocking it is the first step of every open.

Kept light (no chunker, index or pack modules): the CLI unlocks the key before it loads the rest
(cli/repo_options.py), so scrypt's 32 MiB come on top of little, or finds scrypt already run before
the command line was parsed (cli/launch.py, repo/kdf.py). The config is repo_config.py.
See docs/repository.md, "Keys and encryption".
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

from shadowvault.errors import (
    IntegrityError,
    NotFoundError,
    RepositoryError,
    ShadowvaultError,
    UsageError,
    WrongPasswordError,
)
from shadowvault.repo.backend import Backend, FileInfo, load_listed
from shadowvault.repo.crypto import make_key_file, open_key_file
from shadowvault.repo.file_ids import file_id
from shadowvault.repo.master_key import MasterKey
from shadowvault.repo.password_file import password_bytes

log = logging.getLogger(__name__)

KEYS_DIR = "keys/"
_KEY_NAME = re.compile(r"keys/[0-9a-f]{64}")  # keys/<hex BLAKE3 of the file>: nowhere else


def key_files(backend: Backend) -> Iterator[FileInfo]:
    """The key files: what is listed at keys/<64 hex digits>. Anything else there (a file in a
    subdirectory, another name) is no key file: no key command could name it (`key remove` takes
    the id), so no command reads it either; `check` names it (`stray_key_files`)."""
    return (info for info in backend.list(KEYS_DIR) if _KEY_NAME.fullmatch(info.name))


def stray_key_files(backend: Backend) -> list[str]:
    """What lies under keys/ that is not a key file (see `key_files`)."""
    return [info.name for info in backend.list(KEYS_DIR) if not _KEY_NAME.fullmatch(info.name)]


def _matches_its_name(raw: bytes, name: str) -> bool:
    """Whether a key file's content is what was written: its name is the hash of it."""
    return file_id(raw) == name.rsplit("/", 1)[1]


def unlock(backend: Backend, password: str | bytes) -> MasterKey:
    """The master key `password` opens (see `unlock_key`)."""
    return unlock_key(backend, password)[0]


def unlock_key(backend: Backend, password: str | bytes) -> tuple[MasterKey, str]:
    """The master key and the name of the key file that opened it. Every key file is tried; a key
    file is named by its hash, so a damaged one is recognised as such (not taken for a wrong
    password) and the others are still tried."""
    secret = password_bytes(password)
    keys = list(key_files(backend))
    if not keys:
        raise RepositoryError(f"repository {backend.describe()} has no key files")
    damaged: list[str] = []
    for info in keys:
        try:
            raw = load_listed(backend, info)
            if not _matches_its_name(raw, info.name):
                raise IntegrityError(f"key file {info.name} is damaged (its content does not match its name)")
            key = open_key_file(raw, secret)
        except NotFoundError:
            continue  # removed while we listed
        except IntegrityError as err:
            log.warning("%s; trying the other keys", err)
            damaged.append(info.name)
            continue
        if key is not None:
            return key, info.name
    if damaged:
        raise WrongPasswordError(
            f"wrong password, or its key file is damaged ({', '.join(damaged)}): open the repository"
            " with another password (`shadowvault key add` then makes a new key for this one)"
        )
    raise WrongPasswordError("wrong password or no key for this repository")


def add_key(backend: Backend, key: MasterKey, password: str | bytes) -> str:
    """Wrap the master key with another password; returns the key file's name."""
    raw = make_key_file(key, password_bytes(password))
    name = f"{KEYS_DIR}{file_id(raw)}"
    backend.save(name, raw)
    return name


def add_first_key(
    backend: Backend, key: MasterKey, password: str | bytes, kdf_params: dict[str, int] | None
) -> str:
    """The key file of a new repository (its KDF cost may be chosen, e.g. cheaper in tests)."""
    raw = make_key_file(key, password_bytes(password), kdf_params)
    name = f"{KEYS_DIR}{file_id(raw)}"
    backend.save(name, raw)
    return name


def key_name(backend: Backend, ref: str) -> str:
    """The key file named by a full id or a unique prefix of one (as `key list` shows them)."""
    ref = ref.strip().lower()
    if not ref or any(c not in "0123456789abcdef" for c in ref):
        raise UsageError(f"{ref!r} is not a key id (the hex id `key list` shows, or a unique prefix)")
    matches = [info.name for info in key_files(backend) if info.name.rsplit("/", 1)[1].startswith(ref)]
    if not matches:
        raise NotFoundError(f"no key with id {ref}")
    if len(matches) > 1:
        raise UsageError(f"key id prefix {ref} is ambiguous ({len(matches)} keys match)")
    return matches[0]


def remove_key(backend: Backend, name: str, current: str | None) -> None:
    """Remove a key file; never the last one, nor `current` (the one this process opened with)."""
    if sum(1 for _ in key_files(backend)) <= 1:
        raise UsageError(f"key {name.rsplit('/', 1)[1][:8]} is the repository's last key; it stays")
    if name == current:
        raise UsageError(
            f"key {name.rsplit('/', 1)[1][:8]} is the key this command opened the repository with;"
            " open it with another password to remove this one (or use `key passwd` to change it)"
        )
    backend.remove(name)


def damaged_keys(backend: Backend) -> list[str]:
    """The key files whose content no longer matches their name (the hash of what was written):
    found without any password, so `check` sees them before the day they are needed."""
    found = []
    for info in key_files(backend):
        try:
            raw = load_listed(backend, info)
        except NotFoundError:
            continue  # removed while we listed
        except ShadowvaultError:  # not a regular file, unreadable: damaged as well
            found.append(info.name)
            continue
        if not _matches_its_name(raw, info.name):
            found.append(info.name)
    return found


def list_keys(backend: Backend, current: str | None = None) -> list[dict[str, str | bool]]:
    """The key files' public fields (never the wrapped key); `current` marks the one named so, and
    `damaged` the ones whose content does not match their name."""
    found: list[dict[str, str | bool]] = []
    for info in key_files(backend):
        try:
            raw = load_listed(backend, info)
            doc = json.loads(raw)
        except (ValueError, ShadowvaultError):
            raw, doc = b"", {}
        if not isinstance(doc, dict):
            doc = {}
        found.append(
            {
                "id": info.name.rsplit("/", 1)[1],
                "created": str(doc.get("created", "")),
                "host": str(doc.get("host", "")),
                "username": str(doc.get("username", "")),
                "current": info.name == current,
                "damaged": not _matches_its_name(raw, info.name),
            }
        )
    return found
