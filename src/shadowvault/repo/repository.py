"""The repository: the one object archive/, check, prune, repair and the CLI talk to.

A thin front over the layers (as restic's and kopia's are): storage backend (backend*.py) <- keys
and config (keys.py) <- master index (master_index.py) <- pack writing (packer.py) and blob reading
(reader.py) <- snapshots (snapshots.py). Creating a repository is repo_init.py's, what closing one
does with this process's work repo_close.py's. See docs/repository.md for the on-disk contract.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Iterable, Iterator
from types import TracebackType
from typing import BinaryIO

import msgspec

from shadowvault.errors import IntegrityError, PartialFailure, RepositoryError, UsageError
from shadowvault.repo import keys, repo_close, repo_config, repo_init
from shadowvault.repo.backend import Backend
from shadowvault.repo.backend_local import LocalBackend
from shadowvault.repo.chunker import Chunker
from shadowvault.repo.damage import DamagedPack, DamageMap
from shadowvault.repo.format import BlobType, ChunkerParams, Config, IndexFile, IndexPack, PackBlob
from shadowvault.repo.index import BlobIndex, BlobLocation
from shadowvault.repo.index_cache import IndexCache
from shadowvault.repo.master_index import IndexObserver, MasterIndex
from shadowvault.repo.pack import pack_name
from shadowvault.repo.packer import Packer, SaveStats
from shadowvault.repo.reader import BlobReader, LoadedBlob, ReadStats
from shadowvault.repo.repo_init import PACK_SIZE
from shadowvault.repo.s3_credentials import S3Credentials
from shadowvault.repo.sealing import MasterKey, Sealer
from shadowvault.repo.session import Session
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.snapshots import SnapshotStore, filter_snapshots
from shadowvault.repo.storage import Location, Where, backend_for, validate_existing, validate_new
from shadowvault.repo.tree import Tree, decode_tree, encode_tree
from shadowvault.repo.zero_blobs import ZeroBlobs

__all__ = ["PACK_SIZE", "LoadedBlob", "Repository", "SaveStats", "filter_snapshots"]


class Repository:
    """An open repository. `save_blob`, `has_blob` and `load_blob` may be called from many threads."""

    def __init__(self, backend: Backend, key: MasterKey, config: Config, key_name: str | None = None) -> None:
        self.backend = backend
        self.config = config
        self.key_name = key_name  # the key file this repository was opened with (keys/<id>)
        self._key = key
        self.sealer = Sealer(key)
        self.chunker = Chunker(config.chunker)
        self.stats = SaveStats()
        self.session: Session | None = None
        self._master = MasterIndex(backend, self.sealer, IndexCache.for_repository(config.id, key.id_key))
        self._packer = Packer(backend, self.sealer, self._master, config.pack_size, self.stats)
        self._reader = BlobReader(backend, self.sealer, self._master, self._packer)
        self._snapshots = SnapshotStore(backend, self.sealer)
        self.zero_blobs = ZeroBlobs(self.sealer.blob_id)  # what holes are written as (zero_blobs.py)
        self._session_lock = threading.Lock()
        self._closed = False

    # ---------------------------------------------------------------- opening

    @classmethod
    def init(
        cls,
        where: Where,
        password: str | bytes,
        *,
        pack_size: int = PACK_SIZE,
        kdf_params: dict[str, int] | None = None,
        chunker: ChunkerParams | None = None,
    ) -> Repository:
        """Create a repository (in a path or file:// URL that is absent or an empty directory, an
        empty S3 prefix, or an empty backend) and open it for writing. `chunker`: another
        repository's chunker parameters (copies between the two then deduplicate with backups)."""
        backend, key, config, name = repo_init.create(
            where, password, pack_size=pack_size, kdf_params=kdf_params, chunker=chunker
        )
        repo = cls(backend, key, config, name)
        repo._start_session("init")
        return repo

    @classmethod
    def open(
        cls, where: Where, password: str | bytes, *, write: bool = False, kind: str = "backup"
    ) -> Repository:
        """Open an existing repository. With `write`, a session is registered before the index is
        loaded (that order is what makes a concurrent prune safe); without, the index is read when
        first used (listing snapshots needs none)."""
        backend = backend_for(where)
        key, key_name = keys.unlock_key(backend, password)
        return cls.open_unlocked(backend, key, key_name, write=write, kind=kind)

    @classmethod
    def open_unlocked(
        cls, backend: Backend, key: MasterKey, key_name: str, *, write: bool = False, kind: str = "backup"
    ) -> Repository:
        """`open` for a caller that unlocked the key itself (keys.unlock_key): the CLI does so before
        it loads this module and what it brings (cli/repo_options.py)."""
        repo = cls(backend, key, repo_config.open_config(backend, Sealer(key)), key_name)
        if write:
            repo._start_session(kind)
        return repo

    @classmethod
    def repair_config(cls, where: Where, password: str | bytes) -> Config | None:
        """Replace a damaged config with a new one (new id, new chunker seed: the old seed is lost
        with it, so the next backup cannot deduplicate against old data and stores it once more).
        Returns the new config, or None when the config was intact and nothing was written."""
        return repo_init.repair_config(where, password)

    @staticmethod
    def validate_new_path(location: Location) -> Location:
        """Fail early when `location` cannot receive a new repository (a file, a non-empty directory,
        a malformed URL); a local location comes back as a Path, a URL as given."""
        return validate_new(location)

    @staticmethod
    def validate_path(location: Location, s3_credentials: S3Credentials | None = None) -> Where:
        """Fail early (before asking for a password) when `location` cannot be a repository;
        an S3 repository signs with `s3_credentials` when given."""
        return validate_existing(location, s3_credentials)

    def add_key(self, password: str | bytes) -> str:
        """Wrap the master key with another password; returns the key file's name."""
        return keys.add_key(self.backend, self._key, password)

    def list_keys(self) -> list[dict[str, str | bool]]:
        """The key files' public fields (never the wrapped key); `current` marks `key_name`."""
        return keys.list_keys(self.backend, self.key_name)

    def remove_key(self, ref: str) -> str:
        """Remove the key file named by an id or unique prefix (never the current or the last key);
        returns its name."""
        name = keys.key_name(self.backend, ref)
        keys.remove_key(self.backend, name, self.key_name)
        return name

    def change_password(self, password: str | bytes) -> str:
        """Replace the current key by one for `password`: the new key file is written before the old
        one is removed, so an interruption leaves two keys, never none. Returns the new key's name."""
        if self.key_name is None:
            raise UsageError("this repository was not opened with a password")
        old = self.key_name
        new = keys.add_key(self.backend, self._key, password)
        self.key_name = new
        if new != old:
            try:
                self.backend.remove(old)
            except RepositoryError as err:  # said alone, it read as if the password had not changed
                old_id, new_id = old.rsplit("/", 1)[-1][:8], new.rsplit("/", 1)[-1][:8]
                raise PartialFailure(
                    f"the new password works (key {new_id}), but the old key {old_id} is still there: {err};"
                    f" `shadowvault key remove {old_id}` removes it"
                ) from err
        return new

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def path(self) -> str:
        return self.backend.describe()

    # ---------------------------------------------------------------- session and closing

    def _start_session(self, kind: str) -> None:
        if self.session is None:
            self.session = Session(self.backend, self.sealer, kind)
        self.reload_index()

    def close(self, *, flush: bool = True) -> None:
        """Flush (by default) and end the session. Safe to call twice. A writer that stops on an
        error closes with flush=False: the packs it finished stay indexed (the next backup reuses
        them); the open pack is discarded. Reads after a close open pack files again: each close
        lets go of them."""
        if self._closed:
            self.backend.close()
            return
        try:
            repo_close.finish(self._master, self._packer, self.session, flush=flush)
        finally:
            self._closed = True
            self._packer.abort()
            if self.session is not None:
                self.session.close()
                self.session = None
            self.backend.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(flush=exc_type is None)

    # ---------------------------------------------------------------- index and damage

    @property
    def index(self) -> BlobIndex:
        """The in-memory index (replaced whole by every reload)."""
        return self._master.index

    @property
    def damage(self) -> DamageMap:
        return self._master.damage

    @property
    def written_index_files(self) -> list[str]:
        """The index files this process wrote, in order."""
        return self._master.written_files

    def index_files(self) -> list[str]:
        return self._master.file_names()

    def load_index_file(self, name: str) -> IndexFile:
        return self._master.load_file(name)

    def save_index_file(self, packs: list[IndexPack]) -> str:
        return self._master.save_file(packs)

    def save_index_files(self, packs: list[IndexPack]) -> list[str]:
        return self._master.save_files(packs)

    def reload_index(
        self, *, drop_old: bool = False, kept: bool = True, observer: IndexObserver | None = None
    ) -> None:
        """Read the index files again (`drop_old`: single-threaded callers; `kept`: the index kept
        built from the same files may serve; `observer`: told each pack read; see MasterIndex.reload)."""
        self._master.reload(drop_old=drop_old, kept=kept, observer=observer)

    def record_damage(self, records: list[DamagedPack]) -> str | None:
        """Write damage records (see repo/damage.py) and apply them to the in-memory index."""
        return self._master.record_damage(records)

    def clear_damage(self, pack_ids: Collection[str]) -> None:
        """Drop the damage records of packs `check` read back whole and intact."""
        self._master.clear_damage(pack_ids)

    # ---------------------------------------------------------------- blobs

    def blob_id(self, data: bytes | memoryview) -> bytes:
        return self.sealer.blob_id(data)

    def has_blob(self, blob_id: bytes) -> bool:
        """True if the blob is stored (or being stored by this process) and may be deduplicated."""
        return self._packer.has_blob(blob_id)

    def has_blobs(self, blob_ids: Collection[bytes]) -> bool:
        """`has_blob` of every id, in one call (an incremental backup's unchanged files)."""
        return self._packer.has_blobs(blob_ids)

    def _ready_to_write(self) -> None:
        """Refuse a closed repository; start a session on the first write of a read-only one."""
        if self._closed:
            raise RepositoryError("the repository was closed")
        if self.session is None:
            with self._session_lock:
                if self.session is None:
                    self._start_session("write")

    def save_blob(self, kind: BlobType, data: bytes | memoryview) -> bytes:
        """Store a blob unless it is already there; returns its id. Thread-safe; durable after
        `flush()`. The first save of a read-only opened repository starts a session."""
        self._ready_to_write()
        return self._packer.save(BlobType(kind), data)

    def save_sealed(
        self, kind: BlobType, blob_id: bytes, sealed: bytes, raw_length: int, compressed: bool
    ) -> None:
        """Store a blob a seal worker sealed under this repository's keys (`sealing_keys`), unless
        it is already there. Thread-safe, like `save_blob`."""
        self._ready_to_write()
        self._packer.save_sealed(BlobType(kind), blob_id, sealed, raw_length, compressed)

    @property
    def reads_wait_on_network(self) -> bool:
        """True when the storage is remote (S3): restores read with several threads."""
        return self.backend.remote

    def sealing_keys(self) -> MasterKey | None:
        """The keys a seal worker process needs to seal blobs for this repository."""
        return self._key

    def copy_sealed_blob(
        self, kind: BlobType, blob_id: bytes, sealed: bytes, raw_length: int, compressed: bool
    ) -> None:
        """Append an already sealed (and verified) blob to a new pack: how prune repacks."""
        self._packer.copy_sealed_blob(kind, blob_id, sealed, raw_length, compressed)

    def flush(self) -> None:
        """Finish the open packs and write their index. Call after every `save_blob` returned."""
        self._packer.flush()

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        """Where the best copy of a blob is (pack, offset, length), None if unknown."""
        return self._master.index.lookup(blob_id)

    def blob_size(self, blob_id: bytes) -> int | None:
        """The plaintext size of a stored blob, None if unknown."""
        location = self._master.index.lookup(blob_id)
        return None if location is None else location.raw_length

    def load_blob(self, blob_id: bytes) -> bytes:
        """The verified plaintext of a blob (NotFoundError if unknown, IntegrityError if damaged);
        every indexed copy is tried, best first."""
        return self._reader.load(blob_id)

    @property
    def packs_are_local_files(self) -> bool:
        """Whether the repository is a local directory, whose packs other processes (restore
        workers) can read themselves."""
        return isinstance(self.backend, LocalBackend)

    def local_pack_path(self, pack_id: str) -> str | None:
        """The file of a pack when `packs_are_local_files`; None for other storage."""
        if not isinstance(self.backend, LocalBackend):
            return None
        return str(self.backend.file_path(pack_name(pack_id)))

    def count_decoded(self, blobs: int, nbytes: int) -> None:
        """Count blobs that restore workers decoded for this process (`read_stats`)."""
        self._reader.count_decoded(blobs, nbytes)

    @property
    def read_stats(self) -> ReadStats:
        """How many blobs (and plaintext bytes) this process decrypted and verified."""
        return self._reader.stats

    def load_pack_blobs(self, pack_id: str, blob_ids: Iterable[bytes]) -> Iterator[LoadedBlob]:
        """Blobs of one pack (as `lookup` placed them), verified, in pack order, each byte read
        once (one range read unless large gaps split it); see BlobReader.load_pack_blobs."""
        return self._reader.load_pack_blobs(pack_id, blob_ids)

    def decode_blob(self, blob_id: bytes, location: BlobLocation, sealed: bytes) -> bytes:
        """Decrypt, decompress and verify one blob read from its pack."""
        return self._reader.decode(blob_id, location, sealed)

    def verified_sealed(self, pack_id: str, blob: PackBlob, pack_bytes: bytes) -> bytes:
        """The sealed bytes of `blob` in a whole pack read (`pack_bytes`), once they verify
        (IntegrityError otherwise): what check, repack and salvage read packs for."""
        return self._reader.verified_sealed(pack_id, blob, pack_bytes)

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
        return self._snapshots.save(snapshot)

    def load_snapshot(self, snapshot_id: str) -> Snapshot:
        return self._snapshots.load(snapshot_id)

    def snapshot_ids(self) -> list[str]:
        return self._snapshots.ids()

    def list_snapshots(self, *, skip_damaged: bool = True) -> list[tuple[str, Snapshot]]:
        """Every readable snapshot, oldest first; damaged files are skipped and named in
        `damaged_snapshots` (with `skip_damaged=False` they raise IntegrityError)."""
        return self._snapshots.list(skip_damaged=skip_damaged)

    @property
    def damaged_snapshots(self) -> dict[str, str]:
        """id -> why, for the snapshot files the last `list_snapshots` skipped."""
        return self._snapshots.damaged

    def resolve_snapshot_id(self, ref: str) -> str:
        """The full id for a full id or unique prefix, without reading the snapshot."""
        return self._snapshots.resolve_id(ref)

    def find_snapshot(
        self,
        ref: str,
        *,
        paths: Iterable[str] | None = None,
        host: str | None = None,
        tags: Iterable[str] | None = None,
    ) -> tuple[str, Snapshot]:
        """Resolve an id, a unique id prefix or "latest" (optionally the latest matching filters)."""
        return self._snapshots.find(ref, paths=paths, host=host, tags=tags)

    def remove_snapshot(self, snapshot_id: str) -> None:
        self._snapshots.remove(snapshot_id)
