"""Reading blobs: the best copy first, each verified; damaged copies recorded; trees cached.

A read tries the indexed copies best first (intact and live, then pending deletion, then damaged);
a copy that fails verification is recorded as damaged and the next one is tried. See
docs/repository.md, "Damage and repair".
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from shadowvault.errors import IntegrityError, NotFoundError, ShadowvaultError
from shadowvault.repo.backend import Backend
from shadowvault.repo.format import BlobType, PackBlob
from shadowvault.repo.index import BlobLocation
from shadowvault.repo.master_index import MasterIndex
from shadowvault.repo.pack import open_blob, pack_name
from shadowvault.repo.packer import Packer
from shadowvault.repo.sealing import Sealer

log = logging.getLogger(__name__)

# Decrypted TREE blobs kept for repeated reads: a path looked up in snapshot after snapshot reads
# the few trees along it again. Walks (backup's parent, restore, check) read each tree once: at
# 8 MiB the cache held 6 MiB of the 52 MiB peak of a no-change backup of 100k files.
CACHE_BYTES = 1 << 20
MAX_GAP = 1 << 20  # unneeded bytes worth reading through rather than starting another read
MAX_SPAN = 32 << 20  # at most this much of a pack is held at once: a default 16 MiB pack is one read


class BlobCache:
    """A small LRU of decrypted blobs, bounded by bytes. Thread-safe."""

    def __init__(self, limit: int) -> None:
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._size = 0
        self._limit = limit
        self._lock = threading.Lock()

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: bytes, value: bytes) -> None:
        if len(value) > self._limit // 8:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._size += len(value)
            while self._size > self._limit:
                _, old = self._items.popitem(last=False)
                self._size -= len(old)


@dataclass
class ReadStats:
    """Blobs decrypted and verified by this process (tests and benchmarks read it: a restore of
    a hole must decode nothing)."""

    blobs: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class LoadedBlob:
    """One blob of `BlobReader.load_pack_blobs`: its verified data, or why it could not be read."""

    id: bytes
    data: bytes | None
    error: ShadowvaultError | None = None


class BlobReader:
    """Thread-safe reads through the master index and a small cache of trees."""

    def __init__(self, backend: Backend, sealer: Sealer, master: MasterIndex, packer: Packer) -> None:
        self._backend = backend
        self._sealer = sealer
        self._master = master
        self._packer = packer
        self._cache = BlobCache(CACHE_BYTES)
        self.stats = ReadStats()
        self._stats_lock = threading.Lock()

    def load(self, blob_id: bytes) -> bytes:
        """The verified plaintext of a blob (NotFoundError if unknown, IntegrityError if damaged).

        Every indexed copy is tried, best first; a copy that fails is recorded as damaged (so this
        session never deduplicates against it, and a writing session saves the record)."""
        cached = self._cache.get(blob_id)
        if cached is not None:
            return cached
        locations = self._master.index.locations(blob_id)
        if not locations and self._packer.is_inflight(blob_id):
            self._packer.flush()
            locations = self._master.index.locations(blob_id)
        if not locations and self._master.reload_if_changed():
            locations = self._master.index.locations(blob_id)  # a snapshot newer than our index uses it
        if not locations:
            raise NotFoundError(f"blob {blob_id.hex()} is not in the repository index")
        failure: ShadowvaultError | None = None
        tried: set[str] = set()
        while locations:
            location = locations.pop(0)
            if location.pack in tried:
                continue
            tried.add(location.pack)
            try:
                data = self._load_copy(blob_id, location)
            except NotFoundError as err:
                moved = self._moved_by_prune(blob_id, tried)
                if moved:
                    locations = moved
                    continue
                self._master.found_damage(location.pack, None, f"pack {location.pack[:16]} is missing")
                failure = failure or err
                continue
            except IntegrityError as err:
                self._master.found_damage(location.pack, blob_id, str(err))
                failure = failure or err
                continue
            self._remember(blob_id, location, data)
            if failure is not None:
                _read_elsewhere(blob_id, failure, location)
            return data
        assert failure is not None
        raise failure  # the caller says so: one message for the event

    def load_pack_blobs(self, pack_id: str, blob_ids: Iterable[bytes]) -> Iterator[LoadedBlob]:
        """The blobs `blob_ids` (stored in pack `pack_id`, see `lookup`), verified, in pack order,
        read with as few range reads as memory allows: one span from the first to the last blob,
        split only where MAX_GAP unneeded bytes lie between two or it would pass MAX_SPAN. A blob
        that is not in that pack (any more), or whose copy there fails, is read through `load`
        (other copies, damage recorded); if that fails too its LoadedBlob carries the error."""
        wanted: list[tuple[bytes, BlobLocation]] = []
        others: list[bytes] = []
        for blob_id in dict.fromkeys(blob_ids):
            here = [loc for loc in self._master.index.locations(blob_id) if loc.pack == pack_id]
            if here:
                wanted.append((blob_id, here[0]))
            else:
                others.append(blob_id)
        for span in _spans(wanted):
            yield from self._load_span(pack_id, span)
        for blob_id in others:
            yield self._load_one(blob_id)

    def _load_span(self, pack_id: str, span: list[tuple[bytes, BlobLocation]]) -> Iterator[LoadedBlob]:
        start = span[0][1].offset
        end = max(loc.offset + loc.length for _, loc in span)
        try:
            raw = self._backend.load(pack_name(pack_id), start, end - start)
        except ShadowvaultError:
            raw = b""  # each blob goes through `load`, which knows moved and missing packs
        whole = memoryview(raw)  # each blob is decrypted from its place in the range, never copied out
        for blob_id, location in span:
            if raw:
                sealed = whole[location.offset - start : location.offset - start + location.length]
                try:
                    data = self.decode(blob_id, location, sealed)
                except IntegrityError as err:
                    self._master.found_damage(pack_id, blob_id, str(err))
                    yield self._load_one(blob_id, err)
                    continue
                self._remember(blob_id, location, data)
                yield LoadedBlob(blob_id, data)
                continue
            yield self._load_one(blob_id)

    def _load_one(self, blob_id: bytes, failed: ShadowvaultError | None = None) -> LoadedBlob:
        try:
            data = self.load(blob_id)
        except ShadowvaultError as err:
            return LoadedBlob(blob_id, None, failed or err)
        if failed is not None:
            _read_elsewhere(blob_id, failed, None)
        return LoadedBlob(blob_id, data)

    def _remember(self, blob_id: bytes, location: BlobLocation, data: bytes) -> None:
        if location.type == BlobType.TREE:
            self._cache.put(blob_id, data)

    def _load_copy(self, blob_id: bytes, location: BlobLocation) -> bytes:
        try:
            sealed = self._backend.load(pack_name(location.pack), location.offset, location.length)
        except NotFoundError:
            raise NotFoundError(
                f"blob {blob_id.hex()[:16]} is missing: its pack {location.pack[:16]} does not exist"
            ) from None
        return self.decode(blob_id, location, sealed)

    def _moved_by_prune(self, blob_id: bytes, tried: set[str]) -> list[BlobLocation]:
        """Copies in packs not tried yet, after re-reading the index if a concurrent prune changed it."""
        self._master.reload_if_changed()
        return [loc for loc in self._master.index.locations(blob_id) if loc.pack not in tried]

    def decode(self, blob_id: bytes, location: BlobLocation, sealed: bytes | memoryview) -> bytes:
        """Decrypt, decompress and verify one blob read from its pack."""
        data = open_blob(
            self._sealer,
            blob_id,
            location.type,
            sealed,
            length=location.length,
            raw_length=location.raw_length,
            compressed=location.compressed,
            what=f"blob {blob_id.hex()[:16]} in pack {location.pack[:16]}",
        )
        self.count_decoded(1, len(data))
        return data

    def verified_sealed(self, pack_id: str, blob: PackBlob, pack_bytes: bytes) -> bytes:
        """The sealed bytes of `blob` in a whole pack read, once they verify (Repository.verified_sealed)."""
        sealed = pack_bytes[blob.offset : blob.offset + blob.length]
        location = BlobLocation(
            pack_id, BlobType(blob.type), blob.offset, blob.length, blob.raw_length, blob.compressed, False
        )
        self.decode(blob.id, location, sealed)
        return sealed

    def count_decoded(self, blobs: int, nbytes: int) -> None:
        """Count blobs decoded here, or for this process by its restore workers."""
        with self._stats_lock:
            self.stats.blobs += blobs
            self.stats.bytes += nbytes


def _spans(wanted: list[tuple[bytes, BlobLocation]]) -> list[list[tuple[bytes, BlobLocation]]]:
    """The blobs grouped into the range reads that fetch them, in pack order."""
    spans: list[list[tuple[bytes, BlobLocation]]] = []
    start = end = 0
    for item in sorted(wanted, key=lambda item: item[1].offset):
        location = item[1]
        stop = location.offset + location.length
        if spans and location.offset - end <= MAX_GAP and stop - start <= MAX_SPAN:
            spans[-1].append(item)
            end = max(end, stop)
        else:
            spans.append([item])
            start, end = location.offset, stop
    return spans


def _read_elsewhere(blob_id: bytes, failure: ShadowvaultError, location: BlobLocation | None) -> None:
    """A damaged copy was passed over for an intact one: nothing else will say so."""
    where = f" from pack {location.pack[:16]}" if location is not None else ""
    log.warning("%s; read blob %s%s instead", failure, blob_id.hex()[:16], where)
