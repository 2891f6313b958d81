"""Storage backends: the six calls the repository needs, small enough that S3 is one module.

Names are repository-relative with "/" separators ("config", "data/ab/<id>", "index/<id>").
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from shadowvault.errors import NotFoundError, RepositoryError
from shadowvault.fsutil import fsync_dir

log = logging.getLogger(__name__)

TMP_DIR = "tmp"
FILE_MODE = 0o400  # objects are immutable and private (restic's choice too)
DIR_MODE = 0o700
SAVE_ATTEMPTS = 3  # see LocalBackend.save
FD_CACHE_SIZE = 16  # open pack files per reading thread


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int
    mtime: float  # storage clock, seconds since the epoch


class Backend(Protocol):
    """Where repository files live. Every save is atomic: readers see nothing or the whole file."""

    def save(self, name: str, data: bytes) -> None: ...

    def save_file(self, name: str, path: Path) -> None:
        """Store the local file `path` (made by `temp_path`) under `name`; `path` is consumed."""

    def temp_path(self) -> Path:
        """A fresh local path for a file being built (a pack); the caller writes and fsyncs it."""
        ...

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of `name` from `offset` (negative: from the end), `length` of them or to the end."""
        ...

    def stat(self, name: str) -> FileInfo: ...

    def list(self, prefix: str) -> Iterator[FileInfo]: ...

    def remove(self, name: str) -> None: ...

    def describe(self) -> str: ...

    def close(self) -> None:
        """Release cached handles."""


def storage_error(err: OSError, what: str) -> RepositoryError:
    """Turn an OSError into the one line a user should see."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return RepositoryError(f"repository storage is full: cannot write {what}")
    if err.errno in (errno.EACCES, errno.EPERM):
        return RepositoryError(f"permission denied writing {what}")
    if err.errno == errno.EROFS:
        return RepositoryError(f"repository storage is read-only: cannot write {what}")
    return RepositoryError(f"cannot access {what}: {err.strerror or err}")


class LocalBackend:
    """A repository in a local directory: temp file in tmp/, fsync, rename, fsync the directory."""

    # Writers and storage share this machine's clock; the margin covers mtime granularity only.
    clock_margin = 1.0

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._made_dirs: set[Path] = set()
        self._local = threading.local()

    def describe(self) -> str:
        return str(self.root)

    def _path(self, name: str) -> Path:
        if name.startswith("/") or ".." in name.split("/"):
            raise RepositoryError(f"invalid object name {name!r}")
        return self.root / name

    def _ensure_dir(self, directory: Path) -> None:
        if directory in self._made_dirs:
            return
        if not directory.is_dir():
            directory.mkdir(DIR_MODE, parents=True, exist_ok=True)
            fsync_dir(directory.parent)
        self._made_dirs.add(directory)

    def temp_path(self) -> Path:
        tmp = self.root / TMP_DIR
        try:
            self._ensure_dir(tmp)
        except OSError as err:
            raise storage_error(err, str(tmp)) from err
        return tmp / f"{secrets.token_hex(12)}.tmp"

    def save(self, name: str, data: bytes) -> None:
        """Write `data` to a temp file, then rename it into place. A prune may remove a temp file
        that no session protects (this very save may be the one creating a session) as a
        leftover between the write and the rename: then the file is simply written again."""
        for attempt in range(SAVE_ATTEMPTS):
            tmp = self.temp_path()
            try:
                with open_private(tmp) as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as err:
                _unlink_quietly(tmp)
                raise storage_error(err, name) from err
            try:
                self.save_file(name, tmp)
                return
            except RepositoryError:
                if attempt + 1 == SAVE_ATTEMPTS or os.path.lexists(tmp):
                    raise
                log.info("the temp file for %s vanished before its rename (a prune); writing it again", name)

    def save_file(self, name: str, path: Path) -> None:
        target = self._path(name)
        try:
            self._ensure_dir(target.parent)
            os.replace(path, target)
            fsync_dir(target.parent)
        except OSError as err:
            _unlink_quietly(path)
            raise storage_error(err, name) from err

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if length is not None and offset >= 0 and name.startswith("data/"):
            return self._pread(name, offset, length)
        try:
            with open(self._path(name), "rb") as f:
                if offset > 0:
                    f.seek(offset)
                elif offset < 0:  # from the end (a pack's trailer)
                    f.seek(offset, os.SEEK_END)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError as err:
            raise NotFoundError(f"{name} does not exist in repository {self.root}") from err
        except OSError as err:
            raise RepositoryError(f"cannot read {name}: {err.strerror or err}") from err

    def _pread(self, name: str, offset: int, length: int) -> bytes:
        """Range reads of packs through a per-thread cache of open files (packs are immutable;
        a file object closes itself when evicted or when its thread goes away)."""
        cache = getattr(self._local, "files", None)
        if cache is None:
            cache = self._local.files = OrderedDict()
        f = cache.pop(name, None)
        if f is None:
            try:
                f = open(self._path(name), "rb", buffering=0)  # noqa: SIM115 - cached, closed on eviction
            except FileNotFoundError as err:
                raise NotFoundError(f"{name} does not exist in repository {self.root}") from err
            except OSError as err:
                raise RepositoryError(f"cannot read {name}: {err.strerror or err}") from err
            while len(cache) >= FD_CACHE_SIZE:
                cache.popitem(last=False)[1].close()
        cache[name] = f
        try:
            return os.pread(f.fileno(), length, offset)
        except OSError as err:
            raise RepositoryError(f"cannot read {name}: {err.strerror or err}") from err

    def close(self) -> None:
        """Close this thread's cached files (other threads' close when they end)."""
        cache = getattr(self._local, "files", None)
        while cache:
            cache.popitem()[1].close()

    def stat(self, name: str) -> FileInfo:
        try:
            st = os.stat(self._path(name))
        except FileNotFoundError as err:
            raise NotFoundError(f"{name} does not exist in repository {self.root}") from err
        except OSError as err:
            raise RepositoryError(f"cannot stat {name}: {err.strerror or err}") from err
        return FileInfo(name, st.st_size, st.st_mtime)

    def list(self, prefix: str) -> Iterator[FileInfo]:
        """Every object under the directory `prefix` (recursively), skipping hidden and temp files."""
        base = self._path(prefix.rstrip("/"))
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for filename in filenames:
                if filename.startswith(".") or filename.endswith(".tmp"):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, filename))
                except FileNotFoundError:
                    continue  # removed while we listed
                yield FileInfo(f"{rel_dir}/{filename}", st.st_size, st.st_mtime)

    def exposed_to_others(self) -> list[str]:
        """The repository's directories and secrets (config, key files) that other users may read."""
        found = []
        for name in ("", "keys", "data", "index", "snapshots", "config"):
            path = self.root / name if name else self.root
            found.extend(_exposed(path, name or "."))
        keys = self.root / "keys"
        if keys.is_dir():
            for entry in sorted(os.listdir(keys)):
                found.extend(_exposed(keys / entry, f"keys/{entry}"))
        return found

    def list_temp(self) -> Iterator[FileInfo]:
        """Leftover temp files (from interrupted writers)."""
        tmp = self.root / TMP_DIR
        if not tmp.is_dir():
            return
        for entry in os.scandir(tmp):
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            yield FileInfo(f"{TMP_DIR}/{entry.name}", st.st_size, st.st_mtime)

    def remove(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass
        except OSError as err:
            raise RepositoryError(f"cannot remove {name}: {err.strerror or err}") from err


def _exposed(path: Path, name: str) -> list[str]:
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return []
    return [f"{name} (mode {mode:04o})"] if mode & 0o077 else []


def open_private(path: Path) -> BinaryIO:
    """Create a new file only its owner can read, whatever the umask (the repository holds the
    wrapped keys; its data is encrypted but its size and timing are not)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    return os.fdopen(fd, "wb")


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
