"""Creating a repository (`Repository.init`) and replacing a damaged config
(`Repository.repair_config`): what each writes, in which order, and what it refuses. Apart from
repository.py, the front over an open repository, as kopia keeps initialize.go apart from open.go."""

from __future__ import annotations

import os

from shadowvault.errors import IntegrityError, NotFoundError, RepositoryError, UsageError
from shadowvault.repo import keys, repo_config
from shadowvault.repo.backend import Backend
from shadowvault.repo.format import ChunkerParams, Config
from shadowvault.repo.sealing import MasterKey, Sealer
from shadowvault.repo.storage import Where, backend_for, validate_new

PACK_SIZE = 16 << 20


def _exists(backend: Backend, name: str) -> bool:
    try:
        backend.stat(name)
    except NotFoundError:
        return False
    return True


def create(
    where: Where,
    password: str | bytes,
    *,
    pack_size: int,
    kdf_params: dict[str, int] | None,
    chunker: ChunkerParams | None,
) -> tuple[Backend, MasterKey, Config, str]:
    """A new repository's storage, master key, config and first key file's name (see
    `Repository.init`, which opens what this wrote)."""
    if isinstance(where, (str, os.PathLike)):
        validate_new(where)  # fail on the location before the pack size
    if not 16 << 10 <= pack_size <= 1 << 30:
        raise UsageError("the pack size must be between 16 KiB and 1 GiB")
    backend = backend_for(where, new=True)
    if any(True for _ in backend.list("keys/")) or _exists(backend, "config"):
        raise RepositoryError(f"{backend.describe()} is already a repository")
    key = MasterKey.generate()
    config = repo_config.new_config(pack_size, chunker)
    name = keys.add_first_key(backend, key, password, kdf_params)
    # The config is written last: a directory without it is not (yet) a repository.
    repo_config.write_config(backend, Sealer(key), config)
    return backend, key, config, name


def repair_config(where: Where, password: str | bytes) -> Config | None:
    """See `Repository.repair_config`."""
    backend = backend_for(where)
    sealer = Sealer(keys.unlock(backend, password))
    try:
        repo_config.read_config(backend, sealer)
        return None
    except IntegrityError:
        pass
    config = repo_config.new_config(PACK_SIZE)
    repo_config.write_config(backend, sealer, config)
    return config
