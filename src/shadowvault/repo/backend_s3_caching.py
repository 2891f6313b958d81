"""What the S3 backend keeps in its local cache (backend_s3_cache.py is the store) and under which
keys: index files, snapshots and key files whole, small ranges of packs, and the small packs this
host wrote, these also held in memory once read (a backup's trees, read one by one).

Objects are immutable, so nothing here goes stale; removing an object through the backend drops
its entries. Not cached: `config`, sessions, damage records, larger ranges.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from shadowvault.repo.backend_s3_cache import ObjectCache

CACHED_DIRS = ("index/", "snapshots/", "keys/")  # read whole, again by every process
CACHED_RANGE_MAX = 256 << 10  # tree blobs and small files (a large file's chunks are >= 256 KiB raw)
CACHED_PACK_MAX = 1 << 20  # packs this small that we write are cached whole (tree packs, mostly)
PACKS_IN_MEMORY = 8 << 20


class S3Caching:
    """Reads through `cache`; saves and removals tell it what they wrote or removed. Thread-safe."""

    def __init__(self, cache: ObjectCache) -> None:
        self.cache = cache
        self._packs: OrderedDict[str, bytes] = OrderedDict()  # see _cached_pack
        self._packs_lock = threading.Lock()

    def load(
        self, name: str, offset: int, length: int | None, fetch: Callable[[str, int, int | None], bytes]
    ) -> bytes:
        """Backend.load from a cached copy, else `fetch` (kept in the cache if it may be)."""
        if offset >= 0 and length is not None and name.startswith("data/"):
            pack = self._cached_pack(name)
            if pack is not None:
                return pack[offset : offset + length]
        cache_key = self._cache_key_for(name, offset, length)
        if cache_key is not None:
            cached = self.cache.get(cache_key)
            if cached is not None:
                return cached
        data = fetch(name, offset, length)
        if cache_key is not None and (length is None or len(data) == length):
            self.cache.put(cache_key, data)
        return data

    def _cached_pack(self, name: str) -> bytes | None:
        """A small pack this host wrote (kept whole in the cache), verified once and then held in
        memory (at most PACKS_IN_MEMORY bytes) so that reading its trees one by one costs nothing."""
        with self._packs_lock:
            pack = self._packs.get(name)
            if pack is not None:
                self._packs.move_to_end(name)
                return pack
        pack = self.cache.get(_pack_key(name))
        if pack is None:
            return None
        with self._packs_lock:
            self._packs[name] = pack
            while sum(map(len, self._packs.values())) > PACKS_IN_MEMORY:
                self._packs.popitem(last=False)
        return pack

    def _cache_key_for(self, name: str, offset: int, length: int | None) -> str | None:
        if name.startswith(CACHED_DIRS) and offset == 0 and length is None:
            return _cache_key(name)
        if name.startswith("data/") and offset >= 0 and length is not None and 0 < length <= CACHED_RANGE_MAX:
            return f"{_ranges_key(name)}/{offset}-{length}"
        return None

    def saved(self, name: str, data: bytes) -> None:
        """`name` was written with `data` (Backend.save)."""
        if name.startswith(CACHED_DIRS):
            self.cache.put(_cache_key(name), bytes(data))

    def saved_file(self, name: str, data: bytes, size: int) -> None:
        """`name` was written from a file of `size` bytes, read whole (Backend.save_file)."""
        if size <= CACHED_PACK_MAX and name.startswith("data/"):
            self.cache.put(_pack_key(name), data)  # most likely this backup's trees

    def removed(self, name: str) -> None:
        self.cache.discard(_cache_key(name))
        if name.startswith("data/"):
            self.cache.discard(_ranges_key(name))
            self.cache.discard(_pack_key(name))
            with self._packs_lock:
                self._packs.pop(name, None)


def _cache_key(name: str) -> str:
    return f"whole/{name}"


def _ranges_key(name: str) -> str:
    return f"ranges/{name}"


def _pack_key(name: str) -> str:
    return f"packs/{name}"
