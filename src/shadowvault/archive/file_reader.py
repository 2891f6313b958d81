"""Reading files for a backup: which thread reads each file, small ones in batches.

Small files (below the chunker's minimum: one chunk each) are read in batches: the walker gathers
them and hands a reader thread a hundred at a time, which reads, hashes, compresses and packs each
in turn, or has a seal worker process do it (`seal_workers`). One future, queue hand-off and
wake-up per file cost as much as reading the file, and threads that wake each other per file mostly
wait for the GIL. Larger files are read on threads of their own, and cut into chunks that blob
threads store (`file_blobs`). Memory is bounded: at most `max_files` large files, a few batches of
small ones and `max_chunks` chunks are in flight, whatever the size of the files.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from shadowvault.archive.file_blobs import FileBlobs, StoredContent
from shadowvault.archive.seal_workers import BATCHES_QUEUED, SealWorkers, WorkerGone
from shadowvault.archive.small_files import FileError
from shadowvault.archive.store import BlobStore, Chunker
from shadowvault.archive.walk_stats import WalkStats
from shadowvault.repo.chunk_windows import ChunkWindows
from shadowvault.repo.tree import Node
from shadowvault.slots import Slots

log = logging.getLogger(__name__)


class PendingContent(Protocol):
    """A file's stored content to come: its own read's future, or its place in a batch."""

    def done(self) -> bool: ...

    def result(self) -> StoredContent: ...


BATCH_FILES = 128  # small files handed to a reader thread at once
BATCH_BYTES = 8 << 20  # ... or fewer, when they add up to this
WORKERS_AFTER = 3  # batches handed over before seal worker processes start (small backups need none)
LARGE_READERS = 2  # threads reading files of a chunk or more


class BatchedFile:
    """One small file of a batch: its result, once the batch's reader thread got to it."""

    __slots__ = ("batch", "error", "value")

    def __init__(self) -> None:
        self.batch: Future[None] | None = None  # set when the batch is handed over
        self.value: StoredContent | None = None
        self.error: FileError | None = None

    def done(self) -> bool:
        return self.batch is not None and self.batch.done()

    def result(self) -> StoredContent:
        """The stored content; FileError if the file could not be read (the batch's own failure,
        a storage error, is raised as is)."""
        if self.batch is None:
            raise RuntimeError("a batched file was waited for before its batch was handed over (flush)")
        self.batch.result()
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


class FileReader:
    """Reads files into DATA blobs on threads of its own, within bounded memory.

    Small files wait in a batch until it is full or `flush` is called: call `flush` before waiting
    for any of them."""

    def __init__(
        self,
        store: BlobStore,
        chunker: Chunker,
        stats: WalkStats,
        *,
        single_chunk: int,
        read_workers: int = 4,
        blob_workers: int | None = None,
        max_files: int = 64,
        max_chunks: int | None = None,
        seal_processes: int | None = None,
        windows: ChunkWindows | None = None,
    ) -> None:
        self.stats = stats
        self.single_chunk = single_chunk  # files smaller than this are one chunk: read whole
        self.blobs = FileBlobs(
            store,
            chunker,
            stats,
            single_chunk=single_chunk,
            blob_workers=blob_workers,
            max_chunks=max_chunks,
            windows=windows,
        )
        # bound once: called for every file, not looked up through `blobs` each time
        self._read_file, self._stored = self.blobs.read_file, self.blobs.stored
        self.readers = ThreadPoolExecutor(read_workers, thread_name_prefix="sv-read")
        # files of a chunk or more on threads of their own (one is cut at a time, `FileBlobs.large_file`;
        # the other opens the next meanwhile): in one queue with the small files' batches they took
        # every reader thread, the batches waited for the last large file, and the directories
        # walked meanwhile were held whole (a 5 % change of 100k files: +100 MiB; the seal workers
        # idle while the large files were read)
        self.large_readers = ThreadPoolExecutor(LARGE_READERS, thread_name_prefix="sv-read-large")
        self.file_slots = Slots(max_files)  # Ctrl-C cannot wedge it (shadowvault/slots.py)
        self._batch: list[tuple[bytes, Node, bytes, BatchedFile]] = []  # gathered by the walker
        self._batch_bytes = 0
        self._batches = 0
        # small files sealed in worker processes (seal_workers.py): one per CPU but the one this
        # process keeps busy, at most 4; none on one CPU, for a dry run (nothing is sealed) or when
        # asked for none
        cpus = os.cpu_count() or 1
        self._seal_processes = min(cpus - 1, 4) if seal_processes is None else seal_processes
        self._seal_keys = store.sealing_keys() if single_chunk and self._seal_processes else None
        self._sealers: SealWorkers | None = None
        self._sealers_failed = threading.Event()  # said once
        # batches handed over and not done: as many as the readers, or the seal workers, work on and
        # hold queued, and two more. (They took file slots, up to 64 batches of 128 files: the walk
        # ran ~8,000 files ahead of the workers, ~10 MiB of a first backup's peak, for no speed.)
        self.batch_slots = Slots(max(read_workers, BATCHES_QUEUED * self._seal_processes + 2))

    def submit(self, access: bytes, node: Node, label: bytes = b"") -> PendingContent:
        """Read the file at `access` (its original path: `label`) on a reader thread (waits while
        `max_files` large files, or every batch slot, are in flight). A small file joins the batch
        being gathered."""
        if node.size < self.single_chunk:
            slot = BatchedFile()
            self._batch.append((access, node, label, slot))
            self._batch_bytes += node.size
            if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
                self.flush()
            return slot
        self.file_slots.acquire()
        try:
            fut = self.large_readers.submit(self._read_file, access, node, label)
        except BaseException:
            self.file_slots.release()
            raise
        fut.add_done_callback(self._file_done)
        return fut

    def flush(self) -> None:
        """Hand the small files gathered so far to a reader thread (a batch counts as one file in
        flight)."""
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._batches += 1
        self.batch_slots.acquire()
        try:
            sealers = self._seal_workers()
            if sealers is None:
                fut = self.readers.submit(self._read_batch, batch)
            else:
                fut = self.readers.submit(self._seal_batch, sealers, batch)
        except BaseException:
            self.batch_slots.release()
            raise
        for *_, slot in batch:
            slot.batch = fut
        fut.add_done_callback(lambda _f: self.batch_slots.release())

    def _read_batch(self, batch: list[tuple[bytes, Node, bytes, BatchedFile]]) -> None:
        """Read the files of a batch one after the other; a file's failure is its own."""
        for access, node, label, slot in batch:
            try:
                slot.value = self._read_file(access, node, label)
            except FileError as err:
                slot.error = err
            with self.stats.lock:
                self.stats.files_done += 1

    @property
    def sealing_processes(self) -> int:
        """How many seal worker processes this backup started (0: every file was sealed here)."""
        return self._sealers.processes if self._sealers is not None else 0

    def _seal_workers(self) -> SealWorkers | None:
        """The seal worker processes, started with the WORKERS_AFTER-th batch; None: seal here."""
        if self._sealers is None and self._seal_keys is not None and self._batches >= WORKERS_AFTER:
            try:
                self._sealers = SealWorkers(self._seal_keys, self.single_chunk, self._seal_processes)
            except (OSError, WorkerGone) as err:  # no processes to be had: seal here
                log.warning(
                    "cannot start seal worker processes (%s); small files are read in this process", err
                )
                self._seal_keys = None
        return self._sealers

    def _seal_batch(self, sealers: SealWorkers, batch: list[tuple[bytes, Node, bytes, BatchedFile]]) -> None:
        """A batch sealed by a worker process, its blobs stored here; read here if the worker died."""
        try:
            results = sealers.seal([access for access, *_ in batch])
        except WorkerGone as err:
            if sealers.stopped:
                raise  # the backup is being abandoned (shutdown): nothing more is read
            if not self._sealers_failed.is_set():
                self._sealers_failed.set()
                log.warning("%s; small files are read in this process instead", err)
            self._read_batch(batch)
            return
        for (access, node, label, slot), sealed in zip(batch, results, strict=True):
            self.stats.reading_path = label or access
            try:
                if sealed.error is not None:
                    raise FileError(sealed.error)
                slot.value = (
                    self._read_file(access, node, label) if sealed.large else self._stored(node, sealed)
                )
            except FileError as err:
                slot.error = err
            with self.stats.lock:
                self.stats.files_done += 1

    def _file_done(self, _fut: Future[StoredContent]) -> None:
        self.file_slots.release()
        with self.stats.lock:
            self.stats.files_done += 1

    def shutdown(self, *, cancel: bool = False) -> None:
        """Wait for the threads (`cancel`: drop the queued work instead of reading every queued file)."""
        wait = not cancel
        self.readers.shutdown(wait=wait, cancel_futures=cancel)
        self.large_readers.shutdown(wait=wait, cancel_futures=cancel)
        self.blobs.shutdown(cancel=cancel)
        if self._sealers is not None:
            self._sealers.shutdown()
