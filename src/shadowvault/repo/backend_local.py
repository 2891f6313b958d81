"""A repository in a local directory: temp file in tmp/, fsync, rename, fsync the directory."""

from __future__ import annotations

import builtins
import itertools
import logging
import os
import secrets
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from shadowvault.errors import IntegrityError, NotFoundError, RepositoryError
from shadowvault.fsutil import NotRegularFile, fsync_dir, open_regular
from shadowvault.repo.backend import (
    DIR_MODE,
    TMP_DIR,
    FileInfo,
    check_name,
    open_private,
    storage_error,
    unlink_quietly,
)

log = logging.getLogger(__name__)

SAVE_ATTEMPTS = 3  # see LocalBackend.save
FD_CACHE_SIZE = 16  # open pack files per reading thread
LAYOUT = ("keys", "data", "index", "snapshots", "sessions", TMP_DIR)  # made by `create`
CHECKED_FOR_EXPOSURE = ("", "keys", "data", "index", "snapshots", "config")


class _PackFiles(OrderedDict[str, BinaryIO]):
    """One thread's pack files kept open for range reads, least recently used first."""

    def close_all(self) -> None:
        while self:
            self.popitem()[1].close()


class _OpenFiles(threading.local):
    """Per thread: pack files kept open for range reads (closed on eviction, with the thread, or
    by `LocalBackend.close`). Every thread's set is also noted, weakly, in `every`: a thread that
    read and stays alive (an idle pool's) would otherwise keep its packs open after the close, a
    pruned pack's space unfreed and the filesystem busy."""

    def __init__(self, every: weakref.WeakValueDictionary[int, _PackFiles], lock: threading.Lock) -> None:
        self.files = _PackFiles()
        with lock:
            every[next(_thread_numbers)] = self.files


_thread_numbers = itertools.count()


def _unusable(root: Path, err: OSError) -> RepositoryError:
    """A path the checks cannot even look at (a name too long, a directory that cannot be listed):
    one line, not an internal error."""
    return RepositoryError(f"cannot use {root} as a repository: {err.strerror or err}")


class LocalBackend:
    """Files under `root`; see backend.Backend for the contract of each call."""

    # Writers and storage share this machine's clock; the margin covers mtime granularity only.
    clock_margin = 1.0
    remote = False

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._made_dirs: set[Path] = set()
        self._every_open: weakref.WeakValueDictionary[int, _PackFiles] = weakref.WeakValueDictionary()
        self._every_open_lock = threading.Lock()
        self._local = _OpenFiles(self._every_open, self._every_open_lock)

    # ---------------------------------------------------------------- opening

    @staticmethod
    def existing_root(path: str | os.PathLike[str]) -> Path:
        """`path` if it can be a repository; fails early (before asking for a password) otherwise."""
        root = Path(path)
        try:
            if not root.exists():
                raise RepositoryError(f"repository {root} does not exist")
            if not root.is_dir():
                raise RepositoryError(f"{root} is a file, not a repository")
            if not (root / "config").is_file():
                raise RepositoryError(f"{root} is not a Shadowvault repository (no config file)")
        except OSError as err:
            raise _unusable(root, err) from err
        return root

    @staticmethod
    def new_root(path: str | os.PathLike[str]) -> Path:
        """`path` if it can receive a new repository (absent or an empty directory)."""
        root = Path(path)
        try:
            if root.exists() and not root.is_dir():
                raise RepositoryError(f"{root} exists and is not a directory")
            if root.is_dir() and any(root.iterdir()):
                if (root / "config").exists():
                    raise RepositoryError(f"{root} is already a repository")
                raise RepositoryError(f"{root} is not empty; a repository needs an empty or new directory")
        except OSError as err:
            raise _unusable(root, err) from err
        return root

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> LocalBackend:
        return cls(cls.existing_root(path))

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> LocalBackend:
        """Make the directory layout (0700, whatever the umask or who made the empty directory)."""
        root = cls.new_root(path)
        try:
            root.mkdir(DIR_MODE, parents=True, exist_ok=True)
            os.chmod(root, DIR_MODE)
            for sub in LAYOUT:
                (root / sub).mkdir(DIR_MODE, exist_ok=True)
        except OSError as err:
            raise RepositoryError(f"cannot create repository {root}: {err.strerror or err}") from err
        return cls(root)

    def describe(self) -> str:
        return str(self.root)

    # ---------------------------------------------------------------- writing

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def file_path(self, name: str) -> Path:
        """Where the object `name` lives on disk: for readers in other processes (restore workers)."""
        return self._path(name)

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
        check_name(name)
        for attempt in range(SAVE_ATTEMPTS):
            tmp = self.temp_path()
            try:
                with open_private(tmp) as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as err:
                unlink_quietly(tmp)
                raise storage_error(err, name) from err
            try:
                self.save_file(name, tmp)
                return
            except RepositoryError:
                if attempt + 1 == SAVE_ATTEMPTS or os.path.lexists(tmp):
                    raise
                log.info("the temp file for %s vanished before its rename (a prune); writing it again", name)

    def save_file(self, name: str, path: Path) -> None:
        try:
            target = self._path(name)
        except RepositoryError:
            unlink_quietly(path)
            raise
        try:
            self._ensure_dir(target.parent)
            os.replace(path, target)
            fsync_dir(target.parent)
        except OSError as err:
            unlink_quietly(path)
            raise storage_error(err, name) from err

    def remove(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass
        except OSError as err:
            raise RepositoryError(f"cannot remove {name}: {err.strerror or err}") from err

    # ---------------------------------------------------------------- reading

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if length is not None and offset >= 0 and name.startswith("data/"):
            return self._pread(name, offset, length)
        with os.fdopen(self._open_object(name), "rb") as f:
            try:
                if offset > 0:
                    f.seek(offset)
                elif offset < 0:  # from the end (a pack's trailer); at most the whole file
                    f.seek(max(offset, -os.fstat(f.fileno()).st_size), os.SEEK_END)
                return f.read() if length is None else f.read(length)
            except OSError as err:
                raise RepositoryError(f"cannot read {name}: {err.strerror or err}") from err

    def _open_object(self, name: str) -> int:
        """A descriptor of object `name`'s file; an object that is no regular file (a FIFO, a
        device: planted, since the repository writes only files) is damaged."""
        try:
            return open_regular(self._path(name))
        except FileNotFoundError as err:
            raise NotFoundError(f"{name} does not exist in repository {self.root}") from err
        except NotRegularFile as err:
            raise IntegrityError(f"{name} in repository {self.root} is not a regular file (damaged)") from err
        except OSError as err:
            raise RepositoryError(f"cannot read {name}: {err.strerror or err}") from err

    def _pread(self, name: str, offset: int, length: int) -> bytes:
        """Range reads of packs through a per-thread cache of open files (packs are immutable;
        a file object closes itself when evicted or when its thread goes away)."""
        cache = self._open_files()
        f = cache.pop(name, None)
        if f is None:
            f = os.fdopen(self._open_object(name), "rb", buffering=0)
            while len(cache) >= FD_CACHE_SIZE:
                cache.popitem(last=False)[1].close()
        cache[name] = f
        try:
            return os.pread(f.fileno(), length, offset)
        except OSError as err:
            raise RepositoryError(f"cannot read {name}: {err.strerror or err}") from err

    def _open_files(self) -> _PackFiles:
        """This thread's cache of open pack files."""
        return self._local.files

    def close(self) -> None:
        """Close every thread's cached files: the reads are over."""
        with self._every_open_lock:
            caches = list(self._every_open.values())
        for cache in caches:
            cache.close_all()

    def stat(self, name: str) -> FileInfo:
        try:
            st = os.stat(self._path(name))
        except FileNotFoundError as err:
            raise NotFoundError(f"{name} does not exist in repository {self.root}") from err
        except OSError as err:
            raise RepositoryError(f"cannot stat {name}: {err.strerror or err}") from err
        return FileInfo(name, st.st_size, st.st_mtime)

    def list(self, prefix: str) -> Iterator[FileInfo]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [
                d
                for d in dirnames
                if not d.startswith(".") and not (dirpath == str(self.root) and d == TMP_DIR)
            ]
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for filename in filenames:
                if filename.startswith(".") or filename.endswith(".tmp"):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, filename))
                except FileNotFoundError:
                    continue  # removed while we listed
                yield FileInfo(f"{rel_dir}/{filename}", st.st_size, st.st_mtime)

    def list_temp(self) -> Iterator[FileInfo]:
        tmp = self.root / TMP_DIR
        if not tmp.is_dir():
            return
        for entry in os.scandir(tmp):
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            yield FileInfo(f"{TMP_DIR}/{entry.name}", st.st_size, st.st_mtime)

    def exposed_to_others(self) -> builtins.list[str]:
        found = []
        for name in CHECKED_FOR_EXPOSURE:
            path = self.root / name if name else self.root
            found.extend(_exposed(path, name or "."))
        keys = self.root / "keys"
        if keys.is_dir():
            for entry in sorted(os.listdir(keys)):
                found.extend(_exposed(keys / entry, f"keys/{entry}"))
        return found


def _exposed(path: Path, name: str) -> builtins.list[str]:
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return []
    return [f"{name} (mode {mode:04o})"] if mode & 0o077 else []
