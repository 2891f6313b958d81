"""A repository held in this process's memory: for tests, and the model of a remote backend.

Objects live in a dict; temp files (packs being built) are local files in a private scratch
directory, as they would be for S3. It passes the same contract tests as the local backend.
"""

from __future__ import annotations

import builtins
import os
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from shadowvault.errors import NotFoundError, RepositoryError
from shadowvault.repo.backend import (
    TMP_DIR,
    Backend,
    FileInfo,
    check_name,
    is_listed,
    storage_error,
    unlink_quietly,
)


class MemoryBackend:
    """See backend.Backend for the contract of each call. Thread-safe."""

    clock_margin = 1.0  # the storage's clock is this machine's
    remote = False

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()
        self._label = f"memory:{secrets.token_hex(4)}"
        self._scratch = Path(tempfile.mkdtemp(prefix="sv-memory-"))
        os.chmod(self._scratch, 0o700)
        weakref.finalize(self, shutil.rmtree, self._scratch, ignore_errors=True)

    def describe(self) -> str:
        return self._label

    def _missing(self, name: str) -> NotFoundError:
        return NotFoundError(f"{name} does not exist in repository {self._label}")

    def save(self, name: str, data: bytes) -> None:
        check_name(name)
        stored = bytes(data)
        with self._lock:
            self._objects[name] = (stored, time.time())

    def save_file(self, name: str, path: Path) -> None:
        try:
            check_name(name)
            data = path.read_bytes()
        except OSError as err:
            unlink_quietly(path)
            raise storage_error(err, name) from err
        except RepositoryError:
            unlink_quietly(path)
            raise
        self.save(name, data)
        unlink_quietly(path)

    def temp_path(self) -> Path:
        return self._scratch / f"{secrets.token_hex(12)}.tmp"

    def list_temp(self) -> Iterator[FileInfo]:
        for entry in os.scandir(self._scratch):
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            yield FileInfo(f"{TMP_DIR}/{entry.name}", st.st_size, st.st_mtime)

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        check_name(name)
        with self._lock:
            found = self._objects.get(name)
        if found is None:
            raise self._missing(name)
        data = found[0]
        start = max(len(data) + offset, 0) if offset < 0 else offset
        return data[start:] if length is None else data[start : start + length]

    def stat(self, name: str) -> FileInfo:
        check_name(name)
        with self._lock:
            found = self._objects.get(name)
        if found is None:
            raise self._missing(name)
        return FileInfo(name, len(found[0]), found[1])

    def list(self, prefix: str) -> Iterator[FileInfo]:
        base = prefix.strip("/")
        start = f"{base}/" if base else ""
        with self._lock:
            found = [
                FileInfo(name, len(data), mtime)
                for name, (data, mtime) in self._objects.items()
                if name.startswith(start) and is_listed(name) and not name.startswith(f"{TMP_DIR}/")
            ]
        yield from sorted(found, key=lambda info: info.name)

    def remove(self, name: str) -> None:
        check_name(name)
        with self._lock:
            self._objects.pop(name, None)
        if name.startswith(f"{TMP_DIR}/"):
            unlink_quietly(self._scratch / name.split("/", 1)[1])

    def exposed_to_others(self) -> builtins.list[str]:
        return []  # only this process can read its memory

    def close(self) -> None:
        """Nothing to release: the objects stay for the next Repository opened on this backend."""


if TYPE_CHECKING:  # mypy proves the class implements the Protocol; nothing runs

    def _is_a_backend(memory: MemoryBackend) -> Backend:
        return memory
