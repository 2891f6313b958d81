"""The repository: open/init, save and load blobs (thread-safe), index files, snapshots.

Layers: backend (files) <- crypto (sealing) <- packs + index <- this class <- archive/ and cli/.
See docs/repository.md for the on-disk contract.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgspec

from shadowvault.errors import (
    IntegrityError,
    NotFoundError,
    RepositoryError,
    ShadowvaultError,
    UsageError,
    WrongPasswordError,
)
from shadowvault.repo.backend import DIR_MODE, Backend, LocalBackend
from shadowvault.repo.chunker import Chunker, default_params
from shadowvault.repo.crypto import MasterKey, Sealer, make_key_file, open_key_file
from shadowvault.repo.damage import DamagedPack, DamageMap, load_damage, save_damage
from shadowvault.repo.format import (
    FORMAT_VERSION,
    BlobType,
    Config,
    IndexFile,
    IndexPack,
    compress_if_smaller,
    decode_document,
    decompress,
    encode_document,
    file_id,
)
from shadowvault.repo.index import BlobIndex, BlobLocation
from shadowvault.repo.pack import PackWriter, blob_aad, pack_name
from shadowvault.repo.session import Session
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Tree, decode_tree, encode_tree

log = logging.getLogger(__name__)

CONFIG_AAD = b"sv1:config"
INDEX_AAD = b"sv1:index"
SNAPSHOT_AAD = b"sv1:snapshot"
PACK_SIZE = 16 << 20
INDEX_FILE_BLOBS = 50_000  # at most this many blobs per index file
PACKS_PER_INDEX = 8  # write an index file after this many finished packs (resume point after a crash)
MAX_BLOB = 1 << 30  # offsets and lengths are 32-bit in the in-memory index
RELIST_ROUNDS = 10  # re-listings of index/ while files vanish under a reader (see reload_index)
CACHE_BYTES = 8 << 20  # of decrypted TREE blobs kept for repeated reads (small: RSS is a goal)


@dataclass
class SaveStats:
    """What this process added: for backup summaries and benchmarks."""

    blobs_added: int = 0
    raw_bytes_added: int = 0
    stored_bytes_added: int = 0
    blobs_deduplicated: int = 0
    packs_written: int = 0


def _password_bytes(password: str | bytes) -> bytes:
    return password.encode() if isinstance(password, str) else password


class _BlobCache:
    """A small LRU of decrypted blobs, bounded by bytes."""

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


class Repository:
    """An open repository. `save_blob`, `has_blob` and `load_blob` may be called from many threads."""

    def __init__(self, backend: Backend, key: MasterKey, config: Config) -> None:
        self.backend = backend
        self.config = config
        self._key = key
        self.sealer = Sealer(key)
        self.chunker = Chunker(config.chunker)
        self.index = BlobIndex()
        self.stats = SaveStats()
        self.session: Session | None = None
        self._inflight: set[bytes] = set()
        self._inflight_lock = threading.Lock()
        self._pack_lock = threading.Lock()
        self._writers: dict[BlobType, PackWriter] = {}
        self._unindexed: list[IndexPack] = []
        self._index_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._cache = _BlobCache(CACHE_BYTES)
        self.written_index_files: list[str] = []  # by this process, in order
        self._index_names: set[str] = set()  # the index files the in-memory index was built from
        self.damaged_index_files: list[str] = []
        self.damage = DamageMap()
        self.damaged_snapshots: dict[str, str] = {}  # id -> why, found by the last list_snapshots
        self._closed = False

    # ---------------------------------------------------------------- opening

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        password: str | bytes,
        *,
        pack_size: int = PACK_SIZE,
        kdf_params: dict[str, int] | None = None,
    ) -> Repository:
        """Create a repository in `path` (absent or an empty directory) and open it for writing."""
        root = cls.validate_new_path(path)
        if not 16 << 10 <= pack_size <= 1 << 30:
            raise UsageError("the pack size must be between 16 KiB and 1 GiB")
        try:
            root.mkdir(DIR_MODE, parents=True, exist_ok=True)
            os.chmod(root, DIR_MODE)  # private even when the user made the empty directory
            for sub in ("keys", "data", "index", "snapshots", "sessions", "tmp"):
                (root / sub).mkdir(DIR_MODE, exist_ok=True)
        except OSError as err:
            raise RepositoryError(f"cannot create repository {root}: {err.strerror or err}") from err
        backend = LocalBackend(root)
        key = MasterKey.generate()
        config = Config(
            version=FORMAT_VERSION,
            id=secrets.token_hex(16),
            created=time.time(),
            chunker=default_params(secrets.randbits(63)),
            pack_size=pack_size,
        )
        key_file = make_key_file(key, _password_bytes(password), kdf_params)
        backend.save(f"keys/{file_id(key_file)}", key_file)
        sealer = Sealer(key)
        # The config is written last: a directory without it is not (yet) a repository.
        backend.save("config", sealer.seal(encode_document(config), CONFIG_AAD))
        repo = cls(backend, key, config)
        repo._start_session("init")
        return repo

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], password: str | bytes, *, write: bool = False, kind: str = "backup"
    ) -> Repository:
        """Open an existing repository. With `write`, a session is registered before the index is
        loaded (that order is what makes a concurrent prune safe)."""
        root = cls.validate_path(path)
        backend = LocalBackend(root)
        key = cls._unlock(backend, _password_bytes(password))
        config = cls._read_config(backend, Sealer(key))
        if config.version != FORMAT_VERSION:
            raise RepositoryError(f"repository format version {config.version} is not supported")
        repo = cls(backend, key, config)
        if write:
            repo._start_session(kind)
        else:
            repo.reload_index()
        return repo

    @staticmethod
    def _read_config(backend: Backend, sealer: Sealer) -> Config:
        try:
            plain = sealer.open(backend.load("config"), CONFIG_AAD, "config")
            return decode_document(plain, Config, "config")
        except IntegrityError as err:
            raise IntegrityError(
                f"the repository config is damaged ({err}); `shadowvault repair config` writes a new one"
                " (snapshots stay restorable; new backups store their data once more)"
            ) from err

    @classmethod
    def repair_config(cls, path: str | os.PathLike[str], password: str | bytes) -> Config | None:
        """Replace a damaged config with a new one (new id, new chunker seed: the old seed is lost
        with it, so the next backup cannot deduplicate against old data and stores it once more).
        Returns the new config, or None when the config was intact and nothing was written."""
        root = cls.validate_path(path)
        backend = LocalBackend(root)
        key = cls._unlock(backend, _password_bytes(password))
        sealer = Sealer(key)
        try:
            cls._read_config(backend, sealer)
            return None
        except IntegrityError:
            pass
        config = Config(
            version=FORMAT_VERSION,
            id=secrets.token_hex(16),
            created=time.time(),
            chunker=default_params(secrets.randbits(63)),
            pack_size=PACK_SIZE,
        )
        backend.save("config", sealer.seal(encode_document(config), CONFIG_AAD))
        return config

    @staticmethod
    def validate_new_path(path: str | os.PathLike[str]) -> Path:
        """Fail early when `path` cannot receive a new repository (a file, a non-empty directory)."""
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise RepositoryError(f"{root} exists and is not a directory")
        if root.is_dir() and any(root.iterdir()):
            if (root / "config").exists():
                raise RepositoryError(f"{root} is already a repository")
            raise RepositoryError(f"{root} is not empty; a repository needs an empty or new directory")
        return root

    @staticmethod
    def validate_path(path: str | os.PathLike[str]) -> Path:
        """Fail early (before asking for a password) when `path` cannot be a repository."""
        root = Path(path)
        if not root.exists():
            raise RepositoryError(f"repository {root} does not exist")
        if not root.is_dir():
            raise RepositoryError(f"{root} is a file, not a repository")
        if not (root / "config").is_file():
            raise RepositoryError(f"{root} is not a Shadowvault repository (no config file)")
        return root

    @staticmethod
    def _unlock(backend: Backend, password: bytes) -> MasterKey:
        """Try every key file. A key file is named by its hash, so a damaged one is recognised as
        such (not taken for a wrong password) and the others are still tried."""
        keys = list(backend.list("keys/"))
        if not keys:
            raise RepositoryError(f"repository {backend.describe()} has no key files")
        damaged: list[str] = []
        for info in keys:
            try:
                raw = backend.load(info.name)
                if file_id(raw) != info.name.rsplit("/", 1)[1]:
                    raise IntegrityError(
                        f"key file {info.name} is damaged (its content does not match its name)"
                    )
                key = open_key_file(raw, password)
            except NotFoundError:
                continue  # removed while we listed
            except IntegrityError as err:
                log.warning("%s; trying the other keys", err)
                damaged.append(info.name)
                continue
            if key is not None:
                return key
        if damaged:
            raise WrongPasswordError(
                f"wrong password, or its key file is damaged ({', '.join(damaged)}): open the repository"
                " with another password (`shadowvault key add` then makes a new key for this one)"
            )
        raise WrongPasswordError("wrong password or no key for this repository")

    def add_key(self, password: str | bytes) -> str:
        """Wrap the master key with another password; returns the key file's name."""
        raw = make_key_file(self._key, _password_bytes(password))
        name = f"keys/{file_id(raw)}"
        self.backend.save(name, raw)
        return name

    def list_keys(self) -> list[dict]:
        """The key files' public fields (never the wrapped key)."""
        found = []
        for info in self.backend.list("keys/"):
            try:
                doc = json.loads(self.backend.load(info.name))
            except (ValueError, ShadowvaultError):
                doc = {}
            found.append(
                {
                    "id": info.name.rsplit("/", 1)[1],
                    "created": doc.get("created", ""),
                    "host": doc.get("host", ""),
                    "username": doc.get("username", ""),
                }
            )
        return found

    def _start_session(self, kind: str) -> None:
        if self.session is None:
            self.session = Session(self.backend, self.sealer, kind)
        self.reload_index()

    def close(self, *, flush: bool = True) -> None:
        """Flush (by default) and end the session. Safe to call twice."""
        if self._closed:
            return
        try:
            if self.session is not None:
                self._save_found_damage()
            if flush:
                self.flush()
                self._consolidate_index_files()
            else:
                try:  # packs already finished stay reusable by the next backup
                    self._write_pending_index()
                except ShadowvaultError as err:
                    log.warning("could not index the finished packs: %s", err)
        finally:
            self._closed = True
            for writer in self._writers.values():
                writer.abort()
            self._writers.clear()
            if self.session is not None:
                self.session.close()
                self.session = None
            self.backend.close()

    def _save_found_damage(self) -> None:
        """Record the damage this session's reads met, so the next backups and prune know it."""
        records = self.damage.take_unsaved()
        try:
            self.record_damage(records)
        except ShadowvaultError as err:
            log.warning("could not record the damage found: %s", err)

    def record_damage(self, records: list[DamagedPack]) -> str | None:
        """Write damage records (see repo/damage.py) and apply them to the in-memory index."""
        for record in records:
            self.damage.add(record)
            self._apply_damage(record)
        name = save_damage(self.backend, self.sealer, records)
        if name:
            self.damage.files.append(name)
        return name

    def _apply_damage(self, record: DamagedPack) -> None:
        self._apply_damage_to(self.index, record)

    @staticmethod
    def _apply_damage_to(index: BlobIndex, record: DamagedPack) -> None:
        if record.whole:
            index.mark_damaged(record.id)
        for blob_id in record.blobs:
            index.mark_damaged(record.id, blob_id)

    def _consolidate_index_files(self) -> None:
        """Replace the several index files this session wrote by one, so repositories do not
        collect hundreds of small ones between prunes. The merged file is durable before any of
        the old ones goes; a prune that meets a vanished one skips it (its packs are newer than
        this live session, so prune would not touch them anyway)."""
        mine = [name for name in self.written_index_files if name.startswith("index/")]
        if len(mine) < 2 or (self.session is not None and self.session.doc.kind == "prune"):
            return
        try:
            packs: dict[str, IndexPack] = {}
            for name in mine:
                for pack in self.load_index_file(name).packs:
                    packs.setdefault(pack.id, pack)
            if sum(len(p.blobs) for p in packs.values()) > INDEX_FILE_BLOBS * (len(mine) - 1):
                return  # merging would not make fewer files
            merged = self.save_index_files(list(packs.values()))
            for name in mine:
                if name not in merged:
                    self.backend.remove(name)
            self.written_index_files = merged
        except NotFoundError:
            log.debug("not merging this session's index files: a prune already folded some of them")
        except ShadowvaultError as err:
            log.warning("could not merge this session's index files: %s", err)

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(flush=exc_type is None)

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def path(self) -> str:
        return self.backend.describe()

    # ---------------------------------------------------------------- index

    def load_index_file(self, name: str) -> IndexFile:
        plain = self.sealer.open(self.backend.load(name), INDEX_AAD, name)
        return decode_document(plain, IndexFile, name)

    def index_files(self) -> list[str]:
        return [info.name for info in self.backend.list("index/")]

    def reload_index(self) -> None:
        """Read every index file into a fresh, compact in-memory index (files are decrypted and
        decoded a few at a time in threads: decoding releases the GIL, decoded files are bulky).

        An index file may vanish between the listing and its reading: a writer merging its files
        at close, or prune, writes the successor first and removes the old files after. So when a
        listed file is gone, the directory is listed again and the files not seen yet are read,
        until a round finds nothing vanished (without this the successor, written after our
        listing, was missed and its blobs looked absent: a snapshot's tree "not in the index")."""
        names = self.index_files()
        seen = set(names)
        damaged: list[str] = []
        vanished: list[str] = []
        gone: set[str] = set()

        def load(name: str) -> IndexFile | None:
            try:
                return self.load_index_file(name)
            except NotFoundError:
                vanished.append(name)  # replaced; its successor is written before the removal
                return None
            except IntegrityError as err:
                log.warning(
                    "%s (its blobs are treated as missing; `shadowvault repair index` rebuilds the index)",
                    err,
                )
                damaged.append(name)
                return None

        def packs() -> Iterator[IndexPack]:
            batch = names
            with ThreadPoolExecutor(max_workers=4) as pool:
                for _ in range(RELIST_ROUNDS):
                    vanished.clear()
                    for start in range(0, len(batch), 4):
                        for doc in pool.map(load, batch[start : start + 4]):
                            if doc is not None:
                                yield from doc.packs
                    if not vanished:
                        return
                    gone.update(vanished)
                    batch = [name for name in self.index_files() if name not in seen]
                    seen.update(batch)
                log.warning("the index kept changing while it was read; some blobs may look missing")

        index = BlobIndex.from_packs(packs())
        damage = load_damage(self.backend, self.sealer)
        for record in self.damage.records():  # what this process found and has not saved yet
            damage.add(record)
        for record in damage.records():
            self._apply_damage_to(index, record)
        with self._index_lock:
            for pack in self._unindexed:
                index.add(pack.id, pack.blobs)
            self.index = index
            self.damage.whole, self.damage.copies, self.damage.files = (
                damage.whole,
                damage.copies,
                damage.files,
            )
            self._index_names = seen - gone
            self.damaged_index_files = sorted(damaged)

    def reload_index_if_changed(self) -> bool:
        """Reload the index if index files came or went since it was read; True if it did. A
        reader's index is a picture taken at open: a snapshot saved later (by a running backup)
        references blobs only newer index files list, and a prune may have moved blobs."""
        with self._reload_lock:
            if set(self.index_files()) == self._index_names:
                return False
            self.reload_index()
            return True

    def save_index_files(self, packs: list[IndexPack]) -> list[str]:
        """Write `packs` as index files of at most INDEX_FILE_BLOBS blobs each (a huge file would
        cost a reader ~240 B per blob while it is decoded)."""
        names: list[str] = []
        chunk: list[IndexPack] = []
        count = 0
        for pack in packs:
            if chunk and count + len(pack.blobs) > INDEX_FILE_BLOBS:
                names.append(self.save_index_file(chunk))
                chunk, count = [], 0
            chunk.append(pack)
            count += len(pack.blobs)
        if chunk:
            names.append(self.save_index_file(chunk))
        return names

    def save_index_file(self, packs: list[IndexPack]) -> str:
        raw = self.sealer.seal(encode_document(IndexFile(packs=packs)), INDEX_AAD)
        name = f"index/{file_id(raw)}"
        self.backend.save(name, raw)
        self.written_index_files.append(name)
        return name

    def _write_pending_index(self) -> None:
        with self._index_lock:
            packs, self._unindexed = self._unindexed, []
        if not packs:
            return
        try:
            self.save_index_file(packs)
        except BaseException:
            with self._index_lock:
                self._unindexed = packs + self._unindexed
            raise

    # ---------------------------------------------------------------- blobs

    def blob_id(self, data: bytes | memoryview) -> bytes:
        return self.sealer.blob_id(data)

    def has_blob(self, blob_id: bytes) -> bool:
        """True if the blob is stored (or being stored by this process) and may be deduplicated."""
        return self.index.has_blob(blob_id) or blob_id in self._inflight

    def save_blob(self, kind: BlobType, data: bytes | memoryview) -> bytes:
        """Store a blob unless it is already there; returns its id. Thread-safe.

        Hashing, compression and encryption run outside any lock (they release the GIL); only the
        append to the open pack is serialized. The blob is durable after `flush()`.
        """
        if self._closed:
            raise RepositoryError("the repository was closed")
        if self.session is None:
            with self._pack_lock:
                if self.session is None:
                    self._start_session("write")
        kind = BlobType(kind)
        if len(data) > MAX_BLOB:
            raise RepositoryError(f"a blob of {len(data)} bytes is too large (the limit is {MAX_BLOB})")
        blob_id = self.sealer.blob_id(data)
        if self.index.has_blob(blob_id):
            self.stats.blobs_deduplicated += 1
            return blob_id
        with self._inflight_lock:
            if blob_id in self._inflight or self.index.has_blob(blob_id):
                self.stats.blobs_deduplicated += 1
                return blob_id
            self._inflight.add(blob_id)
        try:
            payload, compressed = compress_if_smaller(data)
            sealed = self.sealer.seal_parts(payload, blob_aad(kind, blob_id))
            stored = len(sealed[0]) + len(sealed[1])
            full = None
            with self._pack_lock:
                writer = self._append(kind, blob_id, sealed, len(data), compressed)
                self.stats.blobs_added += 1
                self.stats.raw_bytes_added += len(data)
                self.stats.stored_bytes_added += stored
                if writer.size >= self.config.pack_size:
                    full = self._writers.pop(kind)
        except BaseException:
            with self._inflight_lock:
                self._inflight.discard(blob_id)
            raise
        if full is not None:
            self._commit_pack(full)
        return blob_id

    def _append(
        self,
        kind: BlobType,
        blob_id: bytes,
        sealed: bytes | tuple[bytes, ...],
        raw_length: int,
        compressed: bool,
    ) -> PackWriter:
        """Append to the open pack of `kind` (caller holds the pack lock). On a storage error the
        whole open pack is lost: its blobs are forgotten so nobody deduplicates against them."""
        writer = self._writers.get(kind)
        if writer is None:
            writer = self._writers[kind] = PackWriter(self.backend)
        try:
            writer.add(kind, blob_id, sealed, raw_length, compressed)
        except BaseException:
            self._writers.pop(kind, None)
            writer.abort()
            with self._inflight_lock:
                self._inflight.difference_update(b.id for b in writer.blobs)
            raise
        return writer

    def copy_sealed_blob(
        self, kind: BlobType, blob_id: bytes, sealed: bytes, raw_length: int, compressed: bool
    ) -> None:
        """Append an already sealed (and verified) blob to a new pack: how prune repacks."""
        full = None
        with self._inflight_lock:
            self._inflight.add(blob_id)
        with self._pack_lock:
            writer = self._append(kind, blob_id, sealed, raw_length, compressed)
            if writer.size >= self.config.pack_size:
                full = self._writers.pop(kind)
        if full is not None:
            self._commit_pack(full)

    def _commit_pack(self, writer: PackWriter) -> None:
        """Finish a pack, move it into data/, index it in memory and, every few packs, on disk."""
        ids = [b.id for b in writer.blobs]
        try:
            finished = writer.finish(self.sealer)
            self.backend.save_file(pack_name(finished.id), finished.path)
        except BaseException:
            with self._inflight_lock:
                self._inflight.difference_update(ids)
            raise
        entry = IndexPack(id=finished.id, size=finished.size, blobs=finished.blobs)
        self.index.add(finished.id, finished.blobs)
        with self._inflight_lock:
            self._inflight.difference_update(ids)
        with self._index_lock:
            self._unindexed.append(entry)
            due = len(self._unindexed) >= PACKS_PER_INDEX
        self.stats.packs_written += 1
        if due:
            self._write_pending_index()

    def flush(self) -> None:
        """Finish the open packs and write their index. Call after every `save_blob` returned."""
        with self._pack_lock:
            writers = list(self._writers.values())
            self._writers.clear()
        for writer in writers:
            self._commit_pack(writer)
        self._write_pending_index()

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        return self.index.lookup(blob_id)

    def blob_size(self, blob_id: bytes) -> int | None:
        """The plaintext size of a stored blob, None if unknown."""
        location = self.index.lookup(blob_id)
        return None if location is None else location.raw_length

    def load_blob(self, blob_id: bytes) -> bytes:
        """The verified plaintext of a blob (NotFoundError if unknown, IntegrityError if damaged).

        Every indexed copy is tried, best first; a copy that fails is recorded as damaged (so this
        session never deduplicates against it, and a writing session saves the record)."""
        cached = self._cache.get(blob_id)
        if cached is not None:
            return cached
        locations = self.index.locations(blob_id)
        if not locations and blob_id in self._inflight:
            self.flush()
            locations = self.index.locations(blob_id)
        if not locations and self.reload_index_if_changed():
            locations = self.index.locations(blob_id)  # a snapshot newer than our index references it
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
                self._found_damage(location.pack, None, f"pack {location.pack[:16]} is missing")
                failure = failure or err
                continue
            except IntegrityError as err:
                self._found_damage(location.pack, blob_id, str(err))
                failure = failure or err
                continue
            if location.type == BlobType.TREE:
                self._cache.put(blob_id, data)
            return data
        assert failure is not None
        raise failure

    def _load_copy(self, blob_id: bytes, location: BlobLocation) -> bytes:
        try:
            sealed = self.backend.load(pack_name(location.pack), location.offset, location.length)
        except NotFoundError:
            raise NotFoundError(
                f"blob {blob_id.hex()[:16]} is missing: its pack {location.pack[:16]} does not exist"
            ) from None
        return self.decode_blob(blob_id, location, sealed)

    def _moved_by_prune(self, blob_id: bytes, tried: set[str]) -> list[BlobLocation]:
        """Copies in packs not tried yet, after re-reading the index if a concurrent prune changed it."""
        self.reload_index_if_changed()
        return [loc for loc in self.index.locations(blob_id) if loc.pack not in tried]

    def _found_damage(self, pack_id: str, blob_id: bytes | None, reason: str) -> None:
        blobs = [] if blob_id is None else [blob_id]
        record = DamagedPack(id=pack_id, reason=reason, whole=blob_id is None, blobs=blobs)
        if self.damage.add(record, unsaved=True):
            log.warning("%s (recorded as damaged)", reason)
            self._apply_damage(record)

    def decode_blob(self, blob_id: bytes, location: BlobLocation, sealed: bytes) -> bytes:
        """Decrypt, decompress and verify one blob read from its pack."""
        what = f"blob {blob_id.hex()[:16]} in pack {location.pack[:16]}"
        if len(sealed) != location.length:
            raise IntegrityError(f"{what} is truncated")
        payload = self.sealer.open(sealed, blob_aad(location.type, blob_id), what)
        data = decompress(payload, location.raw_length, what) if location.compressed else payload
        if len(data) != location.raw_length or self.sealer.blob_id(data) != blob_id:
            raise IntegrityError(f"{what} does not match its id")
        return data

    # ---------------------------------------------------------------- files and trees

    def chunk_file(self, source: str | os.PathLike[str] | BinaryIO) -> Iterator[bytes]:
        """The chunks of a file, with this repository's chunker parameters."""
        return self.chunker.chunk_file(source)

    def save_tree(self, tree: Tree) -> bytes:
        return self.save_blob(BlobType.TREE, encode_tree(tree))

    def load_tree(self, tree_id: bytes) -> Tree:
        data = self.load_blob(tree_id)
        try:
            return decode_tree(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            raise IntegrityError(f"tree {tree_id.hex()[:16]} cannot be decoded: {err}") from err

    # ---------------------------------------------------------------- snapshots

    def save_snapshot(self, snapshot: Snapshot) -> str:
        """Flush, then store the snapshot; returns its id (hex). The snapshot is the commit point."""
        self.flush()
        if self.session is not None:
            self.session.ensure_valid()
        raw = self.sealer.seal(encode_document(snapshot), SNAPSHOT_AAD)
        snapshot_id = file_id(raw)
        self.backend.save(f"snapshots/{snapshot_id}", raw)
        return snapshot_id

    def load_snapshot(self, snapshot_id: str) -> Snapshot:
        name = f"snapshots/{snapshot_id}"
        raw = self.backend.load(name)
        if file_id(raw) != snapshot_id:
            raise IntegrityError(
                f"snapshot {snapshot_id[:8]} is damaged (its content does not match its name)"
            )
        return decode_document(
            self.sealer.open(raw, SNAPSHOT_AAD, f"snapshot {snapshot_id[:8]}"),
            Snapshot,
            f"snapshot {snapshot_id[:8]}",
        )

    def snapshot_ids(self) -> list[str]:
        return [info.name.rsplit("/", 1)[1] for info in self.backend.list("snapshots/")]

    def list_snapshots(self, *, skip_damaged: bool = True) -> list[tuple[str, Snapshot]]:
        """Every readable snapshot, oldest first. A damaged snapshot file is skipped and named in
        `damaged_snapshots` (it can be removed with `forget ID`); with `skip_damaged=False` it
        raises IntegrityError instead."""
        found = []
        damaged: dict[str, str] = {}
        for snapshot_id in self.snapshot_ids():
            try:
                found.append((snapshot_id, self.load_snapshot(snapshot_id)))
            except NotFoundError:
                continue  # forgotten while we listed
            except IntegrityError as err:
                if not skip_damaged:
                    raise
                log.warning("%s; skipped (remove it with `shadowvault forget %s`)", err, snapshot_id[:8])
                damaged[snapshot_id] = str(err)
        self.damaged_snapshots = damaged
        found.sort(key=lambda item: (item[1].time, item[0]))
        return found

    def resolve_snapshot_id(self, ref: str) -> str:
        """The full id for a full id or unique prefix, without reading the snapshot (so a damaged
        one can still be named, e.g. to forget it)."""
        ref = ref.strip().lower()
        if not ref or any(c not in "0123456789abcdef" for c in ref):
            raise UsageError(f"{ref!r} is not a snapshot id (hex id, unique prefix, or 'latest')")
        candidates = [i for i in self.snapshot_ids() if i.startswith(ref)]
        if not candidates:
            raise NotFoundError(f"no snapshot with id {ref}")
        if len(candidates) > 1:
            raise UsageError(f"snapshot id prefix {ref} is ambiguous ({len(candidates)} snapshots match)")
        return candidates[0]

    def find_snapshot(
        self,
        ref: str,
        *,
        paths: Iterable[str] | None = None,
        host: str | None = None,
        tags: Iterable[str] | None = None,
    ) -> tuple[str, Snapshot]:
        """Resolve an id, a unique id prefix or "latest" (optionally the latest matching filters)."""
        ref = ref.strip()
        if ref == "latest":
            matches = filter_snapshots(self.list_snapshots(), paths=paths, host=host, tags=tags)
            if not matches:
                raise NotFoundError(
                    "no snapshot matches" if (paths or host or tags) else "the repository has no snapshots"
                )
            return matches[-1]
        snapshot_id = self.resolve_snapshot_id(ref)
        return snapshot_id, self.load_snapshot(snapshot_id)

    def remove_snapshot(self, snapshot_id: str) -> None:
        self.backend.remove(f"snapshots/{snapshot_id}")


def filter_snapshots(
    snapshots: list[tuple[str, Snapshot]],
    *,
    paths: Iterable[str] | None = None,
    host: str | None = None,
    tags: Iterable[str] | None = None,
) -> list[tuple[str, Snapshot]]:
    """Snapshots whose paths include all `paths`, whose host is `host`, and that carry every tag."""
    want_paths = set(paths or ())
    want_tags = set(tags or ())
    return [
        (sid, snap)
        for sid, snap in snapshots
        if (host is None or snap.host == host)
        and want_paths <= set(snap.paths)
        and want_tags <= set(snap.tags)
    ]
