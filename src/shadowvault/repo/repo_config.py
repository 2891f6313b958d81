"""The repository's config: its id, chunker parameters and pack size, sealed under the master key.

See docs/repository.md, "Config".
"""

from __future__ import annotations

import secrets
import time

from shadowvault.errors import IntegrityError, RepositoryError
from shadowvault.repo.backend import Backend
from shadowvault.repo.chunker import default_params
from shadowvault.repo.format import FORMAT_VERSION, ChunkerParams, Config, decode_document, encode_document
from shadowvault.repo.sealing import Sealer

CONFIG_AAD = b"sv1:config"


def new_config(pack_size: int, chunker: ChunkerParams | None = None) -> Config:
    """A fresh config: new id, new random chunker seed (or another repository's chunker parameters,
    so that the same files are cut into the same chunks in both: `init --copy-chunker-params`)."""
    return Config(
        version=FORMAT_VERSION,
        id=secrets.token_hex(16),
        created=time.time(),
        chunker=chunker or default_params(secrets.randbits(63)),
        pack_size=pack_size,
    )


def write_config(backend: Backend, sealer: Sealer, config: Config) -> None:
    backend.save("config", sealer.seal(encode_document(config), CONFIG_AAD))


def read_config(backend: Backend, sealer: Sealer) -> Config:
    """The config, or an IntegrityError that names its repair."""
    try:
        plain = sealer.open(backend.load("config"), CONFIG_AAD, "config")
        return decode_document(plain, Config, "config")
    except IntegrityError as err:
        raise IntegrityError(
            f"the repository config is damaged ({err}); `shadowvault repair config` writes a new one"
            " (snapshots stay restorable; new backups store their data once more)"
        ) from err


def open_config(backend: Backend, sealer: Sealer) -> Config:
    """The config of a repository this version can read."""
    config = read_config(backend, sealer)
    if config.version != FORMAT_VERSION:
        raise RepositoryError(f"repository format version {config.version} is not supported")
    return config
