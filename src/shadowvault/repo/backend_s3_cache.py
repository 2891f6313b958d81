"""A local cache of immutable remote objects: index files, snapshots, key files, and small ranges
of packs (tree blobs), so a backup that changes nothing reads them from disk instead of S3.

Every entry is stored with the BLAKE3 of its bytes and checked on read (a damaged entry is dropped
and fetched again, never reported as damage in the repository). Objects are immutable, so an entry
never goes stale; a removed object's entries are dropped by whoever removes it, and one left
behind by another host is harmless (readers only load what a listing names). The cache is bounded
(least recently used entries go first) and safe to delete at any time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from pathlib import Path

import blake3

from shadowvault.fsutil import open_regular
from shadowvault.repo.cache_dir import private_dir

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 512 << 20
CACHE_SIZE_ENV = "SHADOWVAULT_CACHE_MAX_MIB"
_DIGEST = 32


def default_max_bytes() -> int:
    text = os.environ.get(CACHE_SIZE_ENV, "")
    return int(text) << 20 if text.isdigit() else DEFAULT_MAX_BYTES


class ObjectCache:
    """Entries under `directory`, at most about `max_bytes` of them. Thread-safe; several
    processes may share one directory (writes are atomic renames, evictions tolerate races)."""

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._size: int | None = None  # measured on the first write
        self._private = False

    @property
    def largest_entry(self) -> int:
        """The most bytes one entry holds: `put` keeps no larger one, `get` reads no more."""
        return self.max_bytes // 4

    def _path(self, key: str) -> Path:
        return self.directory / key

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            with os.fdopen(open_regular(path), "rb") as f:  # a FIFO put here blocked for ever
                stored = f.read(self.largest_entry + _DIGEST + 1)  # `put` keeps no more
        except OSError:
            with self._lock:
                self.misses += 1
            return None
        data = stored[_DIGEST:]
        whole = len(stored) >= _DIGEST and len(data) <= self.largest_entry
        if not whole or blake3.blake3(data).digest() != stored[:_DIGEST]:
            log.warning("cache entry %s is damaged; dropping it", path)
            self._unlink(path)
            with self._lock:
                self.misses += 1
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used
        with self._lock:
            self.hits += 1
        return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.largest_entry:
            return
        path = self._path(key)
        try:
            if not self._private:
                private_dir(self.directory)
                self._private = True
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.parent / f".{secrets.token_hex(8)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(blake3.blake3(data).digest())
                out.write(data)
            os.replace(tmp, path)
        except OSError as err:  # a cache that cannot be written is only slower
            log.info("cannot write cache entry %s: %s", path, err)
            return
        with self._lock:
            if self._size is None:
                self._size = self._measure()
            else:
                self._size += len(data) + _DIGEST
            over = self._size > self.max_bytes
        if over:
            self._evict()

    def discard(self, key: str) -> None:
        """Drop an entry, or every entry under a directory key (a pack's ranges)."""
        path = self._path(key)
        if path.is_dir():
            for child in path.iterdir():
                self._unlink(child)
            with contextlib.suppress(OSError):
                path.rmdir()
        else:
            self._unlink(path)

    def _unlink(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()

    def _entries(self) -> list[tuple[float, int, Path]]:
        found = []
        for dirpath, _, filenames in os.walk(self.directory):
            for filename in filenames:
                path = Path(dirpath) / filename
                try:
                    st = path.stat()
                except OSError:
                    continue
                found.append((st.st_mtime, st.st_size, path))
        return found

    def _measure(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _evict(self) -> None:
        """Remove the least recently used entries until the cache is at 3/4 of its bound."""
        with self._lock:
            entries = sorted(self._entries())
            total = sum(size for _, size, _ in entries)
            target = self.max_bytes * 3 // 4
            for _, size, path in entries:
                if total <= target:
                    break
                self._unlink(path)
                total -= size
            self._size = total
