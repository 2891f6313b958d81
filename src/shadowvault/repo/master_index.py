"""The master index: every index file of the repository read into one in-memory BlobIndex, with
the damage records applied, plus the entries of packs this process finished and has not yet
written to an index file. Writes index files, re-reads them when others changed them.

See docs/repository.md, "Write order and crashes" and "Damage and repair".
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from shadowvault.errors import IntegrityError, NotFoundError, ShadowvaultError
from shadowvault.repo.backend import Backend, refuse_oversized
from shadowvault.repo.damage import DamagedPack, DamageMap, load_damage, replace_damage, save_damage
from shadowvault.repo.format import IndexFile, IndexPack, decode_document, encode_document, file_id
from shadowvault.repo.index import BlobIndex
from shadowvault.repo.index_cache import IndexCache
from shadowvault.repo.sealing import Sealer

log = logging.getLogger(__name__)

INDEX_AAD = b"sv1:index"
INDEX_DIR = "index/"
INDEX_FILE_BLOBS = 50_000  # at most this many blobs per index file
SMALL_INDEX_FILE = INDEX_FILE_BLOBS // 8  # a session's index files of fewer blobs are merged at its end
PACKS_PER_INDEX = 8  # write an index file after this many finished packs (resume point after a crash)
RELIST_ROUNDS = 10  # re-listings of index/ while files vanish under a reader (see reload)
# Index files decrypted and decoded at once when the index is built: one per CPU (decoding releases
# the GIL), at most 4. Each decoded file holds ~150 B per blob, up to 50,000 blobs: 4 at once on 2
# CPUs raised a check's peak at a million blobs (153-161 -> 152-154 MiB with 2) for no speed.
DECODING_FILES = min(4, max(1, os.cpu_count() or 1))
# Index files written since the kept index was built are read on top of it (their blobs held in a
# dict, ~360 B each) while they are at most a tenth of it, or this many bytes (~12k blobs: an index
# file holds ~43 bytes per blob); more, and the index is built anew and kept again.
KEPT_ADDED_BYTES = 512 << 10
INDEX_BYTES_PER_BLOB = 43


class IndexObserver(Protocol):
    """Told what a build from the index files reads: check keeps what it needs of each pack this
    way instead of decoding every index file a second time."""

    def pack(self, pack: IndexPack) -> None:
        """A pack entry of an index file, once the index took it."""

    def unreadable(self, name: str, err: IntegrityError) -> None:
        """An index file that could not be decrypted or decoded (its blobs look missing)."""


def mark_damage(index: BlobIndex, record: DamagedPack) -> None:
    """Apply one damage record to an in-memory index (its copies are never deduplicated against)."""
    if record.whole:
        index.mark_damaged(record.id)
    for blob_id in record.blobs:
        index.mark_damaged(record.id, blob_id)


def _stale(built_from: frozenset[str], blobs: int, sizes: dict[str, int]) -> bool:
    """Whether an index kept from `built_from` (of `blobs` blobs) is built anew for the index files
    listed now (name: size): some of its files went (a prune, a merge), or too many came to read on
    top of it."""
    most = max(KEPT_ADDED_BYTES, blobs * INDEX_BYTES_PER_BLOB // 10)
    return not built_from <= sizes.keys() or sum(v for k, v in sizes.items() if k not in built_from) > most


class MasterIndex:
    """Thread-safe. `index` is read on first use and replaced whole by `reload` (readers keep the
    one they took)."""

    def __init__(self, backend: Backend, sealer: Sealer, cache: IndexCache | None = None) -> None:
        self._backend = backend
        self._sealer = sealer
        self._cache = cache  # the index kept built between commands (index_cache.py)
        # None until first used: listing snapshots, tagging or forgetting them needs no index
        # (~0.3 s for 100k blobs, seconds for millions)
        self._index: BlobIndex | None = None
        self._damage = DamageMap()
        self.written_files: list[str] = []  # by this process, in order
        self._written_blobs: dict[str, int] = {}  # how many blobs each of them lists
        self._file_names: set[str] = set()  # the index files `index` was built from
        self._listed_sizes: dict[str, int] = {}  # index file -> size, as the last listing gave them
        # the index files the kept index was built from, and its blobs (None: nothing kept)
        self._kept: tuple[frozenset[str], int] | None = None
        self._unindexed: list[IndexPack] = []  # finished packs not yet in an index file
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()

    @property
    def index(self) -> BlobIndex:
        """The in-memory index of every index file (read now if it was not yet)."""
        return self._loaded()

    @property
    def damage(self) -> DamageMap:
        """The damage recorded in the repository (read with the index) and found since."""
        self._loaded()
        return self._damage

    def _loaded(self) -> BlobIndex:
        index = self._index
        if index is None:
            with self._reload_lock:
                if self._index is None:
                    self.reload()
                index = self._index
            assert index is not None
        return index

    # ---------------------------------------------------------------- index files

    def file_names(self) -> list[str]:
        sizes = {info.name: info.size for info in self._backend.list(INDEX_DIR)}
        self._listed_sizes.update(sizes)
        return list(sizes)

    def load_file(self, name: str) -> IndexFile:
        refuse_oversized(name, self._listed_sizes.get(name, 0))  # one planted file, read whole
        plain = self._sealer.open(self._backend.load(name), INDEX_AAD, name)
        return decode_document(plain, IndexFile, name)

    def save_file(self, packs: list[IndexPack]) -> str:
        raw = self._sealer.seal(encode_document(IndexFile(packs=packs)), INDEX_AAD)
        name = f"{INDEX_DIR}{file_id(raw)}"
        self._backend.save(name, raw)
        self.written_files.append(name)
        self._written_blobs[name] = sum(len(pack.blobs) for pack in packs)
        return name

    def save_files(self, packs: Iterable[IndexPack]) -> list[str]:
        """Write `packs` as index files of at most INDEX_FILE_BLOBS blobs each (a huge file would
        cost a reader ~240 B per blob while it is decoded), each as soon as it is full: `packs`
        may be a stream."""
        names: list[str] = []
        chunk: list[IndexPack] = []
        count = 0
        for pack in packs:
            if chunk and count + len(pack.blobs) > INDEX_FILE_BLOBS:
                names.append(self.save_file(chunk))
                chunk, count = [], 0
            chunk.append(pack)
            count += len(pack.blobs)
        if chunk:
            names.append(self.save_file(chunk))
        return names

    # ---------------------------------------------------------------- reading them all

    def reload(
        self, *, drop_old: bool = False, kept: bool = True, observer: IndexObserver | None = None
    ) -> None:
        """Read every index file into a fresh, compact in-memory index (files are decrypted and
        decoded a few at a time in threads: decoding releases the GIL, decoded files are bulky).
        `drop_old`: let the index held so far go first (an empty index meanwhile), so the two are
        never in memory together: for a single-threaded caller such as check. `kept`: use the
        index kept built from the same files (index_cache.py), and keep what is built here.
        `observer` is told every pack read and every unreadable file (which are then not logged);
        it needs a build from the files themselves (`kept` False).

        An index file may vanish between the listing and its reading: a writer merging its files
        at close, or prune, writes the successor first and removes the old files after. So when a
        listed file is gone, the directory is listed again and the files not seen yet are read,
        until a round finds nothing vanished (without this the successor, written after our
        listing, was missed and its blobs looked absent: a snapshot's tree "not in the index")."""
        if observer is not None and kept:
            raise ValueError("an observed reload reads the index files: kept=False")
        sizes = {info.name: info.size for info in self._backend.list(INDEX_DIR)}
        self._listed_sizes.update(sizes)
        names = list(sizes)
        seen = set(names)
        vanished: list[str] = []
        gone: set[str] = set()
        unreadable: list[str] = []

        def load(name: str) -> IndexFile | None:
            try:
                return self.load_file(name)
            except NotFoundError:
                vanished.append(name)  # replaced; its successor is written before the removal
                return None
            except IntegrityError as err:
                unreadable.append(name)
                if observer is not None:
                    observer.unreadable(name, err)
                    return None
                log.warning(
                    "%s (its blobs are treated as missing; `shadowvault repair index` rebuilds the index)",
                    err,
                )
                return None

        def packs(batch: list[str]) -> Generator[IndexPack, None, None]:
            with ThreadPoolExecutor(max_workers=DECODING_FILES) as pool:
                for _ in range(RELIST_ROUNDS):
                    vanished.clear()
                    for start in range(0, len(batch), DECODING_FILES):
                        for doc in pool.map(load, batch[start : start + DECODING_FILES]):
                            if doc is None:
                                continue
                            for pack in doc.packs:
                                yield pack
                                if observer is not None:
                                    observer.pack(pack)
                    if not vanished:
                        return
                    gone.update(vanished)
                    batch = [name for name in self.file_names() if name not in seen]
                    seen.update(batch)
                log.warning("the index kept changing while it was read; some blobs may look missing")

        if drop_old:
            self._index = BlobIndex()
        cache = self._cache if kept else None
        index = None
        found = cache.load() if cache is not None else None
        if found is not None:
            index, built_from = found
            added = [name for name in names if name not in built_from]
            self._kept = (built_from, len(index))
            if _stale(built_from, len(index), sizes):
                index = None  # files went (a prune, a merge) or many blobs came: build anew
            else:
                on_top = packs(added)
                try:
                    if not all(index.add_pack(pack) for pack in on_top):
                        index = None  # two copies of a blob came (a healed blob): a build keeps both
                finally:
                    on_top.close()
        if index is None:
            seen.clear()
            seen.update(names)
            gone.clear()
            unreadable.clear()
            index = BlobIndex.from_packs(packs(names))
            if cache is not None and not gone and not unreadable:  # built from exactly `names`
                cache.save(names, index)
                self._kept = (frozenset(names), len(index))
        damage = load_damage(self._backend, self._sealer)
        for record in self._damage.records():  # what this process found and has not saved yet
            damage.add(record)
        for record in damage.records():
            mark_damage(index, record)
        with self._lock:
            for pack in self._unindexed:
                index.add(pack.id, pack.blobs)
            self._index = index
            self._damage.take_from(damage)
            self._file_names = seen - gone

    def keep_for_next(self) -> None:
        """Build the index now and keep it when the index files differ so much from those of the
        kept index that the next command would build it anyway: after a first backup, or a large
        one. That command then maps it (a no-change backup after the first of 100k files spent
        0.19 s and its peak memory building it). For a writer that is done with its index."""
        if self._kept is None:
            return
        built_from, blobs = self._kept
        if _stale(built_from, blobs, {info.name: info.size for info in self._backend.list(INDEX_DIR)}):
            self.reload(drop_old=True)

    def reload_if_changed(self) -> bool:
        """Reload if index files came or went since the index was read; True if it did. A
        reader's index is a picture taken at open: a snapshot saved later (by a running backup)
        references blobs only newer index files list, and a prune may have moved blobs."""
        with self._reload_lock:
            if set(self.file_names()) == self._file_names:
                return False
            self.reload()
            return True

    # ---------------------------------------------------------------- this process's packs

    def add_pack(self, entry: IndexPack) -> bool:
        """A finished pack: findable now, in an index file soon. True when enough packs, or blobs
        (packs of small files hold ~20k each), wait for their index file that `write_pending` is due."""
        self._loaded()  # before the lock: reading the index takes it
        with self._lock:
            assert self._index is not None
            self._index.add(entry.id, entry.blobs)
            self._unindexed.append(entry)
            waiting = self._unindexed
            return len(waiting) >= PACKS_PER_INDEX or sum(len(p.blobs) for p in waiting) >= INDEX_FILE_BLOBS

    def write_pending(self) -> None:
        """Write the finished packs' entries as index files of at most INDEX_FILE_BLOBS blobs
        (kept for a retry on failure). Eight packs of small files in one file made files of 160k
        blobs that every reader decoded whole (~24 MB each), and a backup's merge of its files
        skipped such sizes."""
        with self._lock:
            packs, self._unindexed = self._unindexed, []
        if not packs:
            return
        try:
            self.save_files(packs)
        except BaseException:
            with self._lock:
                self._unindexed = packs + self._unindexed
            raise

    def consolidate(self) -> None:
        """Replace the small index files this process wrote by fewer, so repositories do not
        collect hundreds of small ones between prunes (packs of large files hold a few dozen blobs
        each). Files of SMALL_INDEX_FILE blobs or more stay: merging those made no file count worth
        having and cost the end of a first backup a decoded file and its new encoding at once
        (+15 MiB over its peak, 2 GiB / 100k files). The merged files are durable before any of
        the old ones goes; a prune that meets a vanished one skips it (its packs are newer than
        this live session, so prune would not touch them anyway). Files are read one at a time and
        merged files written as they fill: a million-blob backup held every entry decoded at once
        (~150 B each) right at its end."""
        mine = [
            name
            for name in self.written_files
            if name.startswith(INDEX_DIR)
            and self._written_blobs.get(name, INDEX_FILE_BLOBS) < SMALL_INDEX_FILE
        ]
        if len(mine) < 2:
            return

        def packs_once() -> Iterator[IndexPack]:
            seen: set[str] = set()
            for name in mine:
                for pack in self.load_file(name).packs:
                    if pack.id not in seen:
                        seen.add(pack.id)
                        yield pack

        try:
            merged = self.save_files(packs_once())  # each one also joins written_files
            removed = [name for name in mine if name not in merged]
            for name in removed:
                self._backend.remove(name)
            self.written_files = [name for name in self.written_files if name not in removed]
        except NotFoundError:
            log.debug("not merging this session's index files: a prune already folded some of them")
        except ShadowvaultError as err:
            log.warning("could not merge this session's index files: %s", err)

    # ---------------------------------------------------------------- damage

    def record_damage(self, records: list[DamagedPack]) -> str | None:
        """Write damage records (see repo/damage.py) and apply them to the in-memory index."""
        for record in records:
            self.damage.add(record)
            mark_damage(self.index, record)
        name = save_damage(self._backend, self._sealer, records)
        if name:
            self.damage.files.append(name)
        return name

    def clear_damage(self, pack_ids: Collection[str]) -> None:
        """Drop the records of packs read back whole and intact (the index keeps ranking their
        copies last until the next open: only the order copies are tried in)."""
        self.damage.forget(pack_ids)
        replace_damage(self._backend, self._sealer, self.damage, keep=self.damage.packs())

    def found_damage(self, pack_id: str, blob_id: bytes | None, reason: str) -> None:
        """A read met damage: avoid that copy from now on, and remember it for `save_found_damage`."""
        blobs = [] if blob_id is None else [blob_id]
        record = DamagedPack(id=pack_id, reason=reason, whole=blob_id is None, blobs=blobs)
        if self.damage.add(record, unsaved=True):  # the reader or its caller says what happened
            log.debug("damage met: %s", reason)
            mark_damage(self.index, record)

    def save_found_damage(self) -> None:
        """Record the damage this session's reads met, so the next backups and prune know it."""
        records = self._damage.take_unsaved()  # none unless reads (with the index) found some
        try:
            self.record_damage(records)
        except ShadowvaultError as err:
            log.warning("could not record the damage found: %s", err)
        else:
            if records:
                log.info(
                    "recorded %d damaged pack(s): the next backups store their blobs again", len(records)
                )
