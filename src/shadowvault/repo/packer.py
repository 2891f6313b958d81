"""Writing blobs: one open pack per writing thread and blob type; a full pack goes to data/ and into
the master index.

Hashing, compression, encryption and the append to the thread's own open pack (a file write and the
pack's running hash) run outside any lock; threads share only the table of open packs. A backup of
N workers ends with up to N partial packs per blob type (`flush`). See docs/repository.md, "Write
order and crashes".

A full pack is finished (its header sealed, the file made durable with fsync or uploaded, renamed
into data/, indexed) by a committer thread, while the thread that filled it goes on with its next
blob: done in the writing thread, the fsync stalled it (1.5 GiB of large files: 191 fsyncs, 2.9 s
of 8.5, the compressing threads idle meanwhile). At most COMMITS_QUEUED full packs wait (finished
packs are files, not memory); a failed commit fails the next `save` and `flush`, so no snapshot is
ever saved over a pack that was not stored.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from shadowvault.errors import RepositoryError
from shadowvault.repo.backend import Backend
from shadowvault.repo.format import BlobType, IndexPack
from shadowvault.repo.master_index import MasterIndex
from shadowvault.repo.pack import PackWriter, pack_name
from shadowvault.repo.sealing import Sealer, seal_blob
from shadowvault.slots import Slots

MAX_BLOB = 1 << 30  # offsets and lengths are 32-bit in the in-memory index
COMMITTERS = 2  # full packs committed at once (an upload to remote storage takes a while)
COMMITS_QUEUED = 3  # full packs being committed or waiting for a committer before a writer waits too


@dataclass
class SaveStats:
    """What this process added: for backup summaries and benchmarks."""

    blobs_added: int = 0
    raw_bytes_added: int = 0
    stored_bytes_added: int = 0
    blobs_deduplicated: int = 0
    packs_written: int = 0


class Packer:
    """Thread-safe. A blob is findable (`has_blob`) from the moment its save starts, durable after
    `flush`."""

    def __init__(
        self, backend: Backend, sealer: Sealer, master: MasterIndex, pack_size: int, stats: SaveStats
    ) -> None:
        self._backend = backend
        self._sealer = sealer
        self._master = master
        self._pack_size = pack_size
        self.stats = stats
        self._inflight: set[bytes] = set()  # being stored by this process, not yet in the index
        self._inflight_lock = threading.Lock()
        self._pack_lock = threading.Lock()  # guards the table, never a pack's own writes
        self._writers: dict[tuple[int, BlobType], PackWriter] = {}  # (thread, kind) -> its open pack
        self._commit_slots = Slots(COMMITS_QUEUED)
        self._committer: ThreadPoolExecutor | None = None  # started with the first full pack
        self._commits: set[Future[None]] = set()  # full packs being committed
        self._commit_failed: BaseException | None = None

    def is_inflight(self, blob_id: bytes) -> bool:
        return blob_id in self._inflight

    def has_blob(self, blob_id: bytes) -> bool:
        """True if the blob is stored (or being stored by this process) and may be deduplicated."""
        return self._master.index.has_blob(blob_id) or blob_id in self._inflight

    def has_blobs(self, blob_ids: Collection[bytes]) -> bool:
        """`has_blob` of every id, the index asked once for them all."""
        return self._master.index.has_all(blob_ids) or all(self.has_blob(b) for b in blob_ids)

    def save(self, kind: BlobType, data: bytes | memoryview) -> bytes:
        """Store a blob unless it is already there; returns its id."""
        if len(data) > MAX_BLOB:
            raise RepositoryError(f"a blob of {len(data)} bytes is too large (the limit is {MAX_BLOB})")
        blob_id = self._sealer.blob_id(data)
        if not self._claim(blob_id):
            return blob_id
        try:
            sealed, compressed = seal_blob(self._sealer, kind, blob_id, data)
        except BaseException:
            self._unclaim(blob_id)
            raise
        self._store_claimed(kind, blob_id, sealed, len(data), compressed)
        return blob_id

    def save_sealed(
        self, kind: BlobType, blob_id: bytes, sealed: bytes, raw_length: int, compressed: bool
    ) -> None:
        """Store a blob sealed elsewhere under this repository's keys (a seal worker process),
        unless it is already there: deduplication and packing stay here."""
        if self._claim(blob_id):
            self._store_claimed(kind, blob_id, sealed, raw_length, compressed)

    def _claim(self, blob_id: bytes) -> bool:
        """True if this call is to store the blob (now in flight); False if it is stored, or
        being stored by another thread (counted as deduplicated)."""
        if self._master.index.has_blob(blob_id):
            self.stats.blobs_deduplicated += 1
            return False
        with self._inflight_lock:
            if blob_id in self._inflight or self._master.index.has_blob(blob_id):
                self.stats.blobs_deduplicated += 1
                return False
            self._inflight.add(blob_id)
        return True

    def _unclaim(self, blob_id: bytes) -> None:
        """Drop a claim whose blob was not stored, so nobody deduplicates against it."""
        with self._inflight_lock:
            self._inflight.discard(blob_id)

    def _store_claimed(
        self,
        kind: BlobType,
        blob_id: bytes,
        sealed: bytes | tuple[bytes, bytes],
        raw_length: int,
        compressed: bool,
    ) -> None:
        """Append a claimed blob to this thread's pack (commit the pack once full); on failure the
        claim is dropped, so nobody deduplicates against a blob that was never stored."""
        try:
            stored = len(sealed) if isinstance(sealed, bytes) else len(sealed[0]) + len(sealed[1])
            full = self._append(kind, blob_id, sealed, raw_length, compressed)
            with self._pack_lock:
                self.stats.blobs_added += 1
                self.stats.raw_bytes_added += raw_length
                self.stats.stored_bytes_added += stored
        except BaseException:
            self._unclaim(blob_id)
            raise
        if full is not None:
            self._commit_later(full)

    def copy_sealed_blob(
        self, kind: BlobType, blob_id: bytes, sealed: bytes, raw_length: int, compressed: bool
    ) -> None:
        """Append an already sealed (and verified) blob to a new pack: how prune repacks."""
        with self._inflight_lock:
            self._inflight.add(blob_id)
        full = self._append(kind, blob_id, sealed, raw_length, compressed)
        if full is not None:
            self._commit_later(full)

    def _append(
        self,
        kind: BlobType,
        blob_id: bytes,
        sealed: bytes | tuple[bytes, ...],
        raw_length: int,
        compressed: bool,
    ) -> PackWriter | None:
        """Append to this thread's open pack of `kind`; the pack, taken out of the table, once it is
        full. On a storage error the whole open pack is lost: its blobs are forgotten so nobody
        deduplicates against them."""
        key = (threading.get_ident(), kind)
        with self._pack_lock:
            writer = self._writers.get(key)
            if writer is None:
                writer = self._writers[key] = PackWriter(self._backend)
        try:
            writer.add(kind, blob_id, sealed, raw_length, compressed)
        except BaseException:
            with self._pack_lock:
                self._writers.pop(key, None)
            self._discard(writer)
            raise
        if writer.size < self._pack_size:
            return None
        with self._pack_lock:
            return self._writers.pop(key)

    def _commit(self, writer: PackWriter) -> None:
        """Finish a pack, move it into data/, index it in memory and, every few packs, on disk."""
        ids = [b.id for b in writer.blobs]
        try:
            finished = writer.finish(self._sealer)
            self._backend.save_file(pack_name(finished.id), finished.path)
        except BaseException:
            with self._inflight_lock:
                self._inflight.difference_update(ids)
            raise
        due = self._master.add_pack(IndexPack(id=finished.id, size=finished.size, blobs=finished.blobs))
        with self._inflight_lock:
            self._inflight.difference_update(ids)
        with self._pack_lock:
            self.stats.packs_written += 1
        if due:
            self._master.write_pending()

    def _commit_later(self, writer: PackWriter) -> None:
        """Hand a full pack to a committer thread (waiting while COMMITS_QUEUED are pending)."""
        try:
            self._raise_failed_commit()
            self._commit_slots.acquire()
        except BaseException:
            self._discard(writer)
            raise
        try:
            with self._pack_lock:
                if self._committer is None:
                    self._committer = ThreadPoolExecutor(COMMITTERS, thread_name_prefix="sv-commit")
                commit = self._committer.submit(self._commit, writer)
                self._commits.add(commit)
        except RuntimeError:  # the committer was shut down (an abort): committed here
            self._commit_slots.release()
            self._commit(writer)
            return
        except BaseException:
            self._commit_slots.release()
            self._discard(writer)
            raise
        commit.add_done_callback(self._committed)

    def _discard(self, writer: PackWriter) -> None:
        """A pack that is not stored: its blobs forgotten, so nobody deduplicates against them."""
        writer.abort()
        with self._inflight_lock:
            self._inflight.difference_update(b.id for b in writer.blobs)

    def _committed(self, commit: Future[None]) -> None:
        self._commit_slots.release()
        with self._pack_lock:
            self._commits.discard(commit)
            failure = commit.exception()
            if failure is not None and self._commit_failed is None:
                self._commit_failed = failure

    def _raise_failed_commit(self) -> None:
        if self._commit_failed is not None:
            raise self._commit_failed

    def wait_commits(self) -> None:
        """Wait for the full packs handed to the committer so far (their failure is raised by
        `flush` and the next `save`)."""
        with self._pack_lock:
            commits = list(self._commits)
        for commit in commits:
            try:
                commit.result()
            except Exception:  # kept in _commit_failed by _committed
                continue

    def flush(self) -> None:
        """Finish the open packs, wait for the full ones being committed, and write their index.
        Call after every `save` returned."""
        with self._pack_lock:
            writers = list(self._writers.values())
            self._writers.clear()
        for writer in writers:
            self._commit(writer)
        self.wait_commits()
        self._raise_failed_commit()
        self._master.write_pending()

    def abort(self) -> None:
        """Discard the open packs (their blobs were never indexed); the full ones being committed
        are committed first."""
        with self._pack_lock:
            writers = list(self._writers.values())
            self._writers.clear()
        for writer in writers:
            writer.abort()
        self.wait_commits()
        with self._pack_lock:
            committer, self._committer = self._committer, None
        if committer is not None:
            committer.shutdown(wait=True)
