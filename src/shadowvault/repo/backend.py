"""The storage interface: every call the repository makes on the place its files live.

Names are repository-relative with "/" separators ("config", "data/ab/<id>", "index/<id>").
`backend_local.py` keeps them in a directory, `backend_memory.py` in a dict (tests); an S3 module
implements the same Protocol. `tests/repo/test_backend_contract.py` is what each one must pass.
"""

from __future__ import annotations

import builtins
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from shadowvault.errors import IntegrityError, RepositoryError

TMP_DIR = "tmp"
FILE_MODE = 0o400  # objects are immutable and private (restic's choice too)
DIR_MODE = 0o700
REMOTE_CLOCK_MARGIN = 600.0  # seconds; storage whose clock is not this machine's (S3)


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int
    mtime: float  # storage clock, seconds since the epoch


# No document (config, key, index, snapshot, session, damage record) is larger stored: its body is
# at most format.MAX_DOCUMENT_BYTES, sealed with a flag byte, a nonce and a tag.
MAX_DOCUMENT_FILE = (256 << 20) + 64


def load_listed(backend: Backend, info: FileInfo) -> bytes:
    """The whole of a document file as listed, refused unread (IntegrityError) when the listing
    shows it larger than any document: a file planted in keys/, index/, snapshots/, sessions/ or
    damage/ was read whole by every command that lists them (a 4 GiB one ended `snapshots` in a
    MemoryError, a larger one would take the machine's memory)."""
    refuse_oversized(info.name, info.size)
    return backend.load(info.name)


def refuse_oversized(name: str, size: int) -> None:
    """IntegrityError when a document file's listed size is larger than any document's."""
    if size > MAX_DOCUMENT_FILE:
        raise IntegrityError(f"{name} is {size} bytes, larger than any document (damaged)")


class Backend(Protocol):
    """Where repository files live. Every save is atomic: readers see nothing or the whole file, and
    saving an existing name replaces it whole (session files are re-written)."""

    @property
    def clock_margin(self) -> float:
        """Seconds by which the storage's clock (file mtimes) may differ from this machine's: prune
        protects files newer than the oldest live session's start minus this margin."""
        ...

    @property
    def remote(self) -> bool:
        """Whether reads wait on a network (several concurrent readers pay off), not on a local disk."""
        ...

    def describe(self) -> str:
        """Where the repository is, for messages (a path, a URL)."""
        ...

    def save(self, name: str, data: bytes) -> None:
        """Store `data` under `name` atomically."""
        ...

    def save_file(self, name: str, path: Path) -> None:
        """Store the local file `path` (made by `temp_path`) under `name`; `path` is consumed."""
        ...

    def temp_path(self) -> Path:
        """A fresh local path for a file being built (a pack); the caller writes and fsyncs it."""
        ...

    def list_temp(self) -> Iterator[FileInfo]:
        """Temp files not (yet) saved, named "tmp/<name>": leftovers of interrupted writers, which
        prune removes with `remove` once no live session can own them."""
        ...

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of `name` from `offset` (negative: from the end), `length` of them or to the end
        (NotFoundError when `name` does not exist)."""
        ...

    def stat(self, name: str) -> FileInfo:
        """Size and mtime of `name` (NotFoundError when it does not exist)."""
        ...

    def list(self, prefix: str) -> Iterator[FileInfo]:
        """Every object under the directory `prefix` ("data/"), recursively, skipping hidden names
        (a component starting with ".") and temp files."""
        ...

    def remove(self, name: str) -> None:
        """Delete `name`; removing a name that does not exist is not an error."""
        ...

    def exposed_to_others(self) -> builtins.list[str]:
        """The repository's directories and secrets (config, key files) that other users of the
        storage may read, for `check` to warn about; empty where the storage has no such notion."""
        ...

    def close(self) -> None:
        """Release cached handles."""
        ...


def check_name(name: str) -> str:
    """Refuse names that would leave the repository (absolute, or with a ".." component)."""
    if not name or name.startswith("/") or ".." in name.split("/"):
        raise RepositoryError(f"invalid object name {name!r}")
    return name


def is_listed(name: str) -> bool:
    """False for names `list` skips: hidden components and temp files."""
    return not any(part.startswith(".") for part in name.split("/")) and not name.endswith(".tmp")


def storage_error(err: OSError, what: str) -> RepositoryError:
    """Turn an OSError into the one line a user should see."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return RepositoryError(
            f"repository storage is full: cannot write {what}; `shadowvault prune` frees what a failed backup"
            " left, `shadowvault forget` old snapshots and prune again for more"
        )
    if err.errno in (errno.EACCES, errno.EPERM):
        return RepositoryError(f"permission denied writing {what}")
    if err.errno == errno.EROFS:
        return RepositoryError(f"repository storage is read-only: cannot write {what}")
    return RepositoryError(f"cannot access {what}: {err.strerror or err}")


def open_private(path: Path) -> BinaryIO:
    """Create a new file only its owner can read, whatever the umask (the repository holds the
    wrapped keys; its data is encrypted but its size and timing are not)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    return os.fdopen(fd, "wb")


def unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
