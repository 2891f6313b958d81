"""Reading files for a backup: reader threads open and cut files, blob threads store the chunks.

Small files (below the chunker's minimum: one chunk each) are read in batches: the walker gathers
them and hands a reader thread a hundred at a time, which reads, hashes, compresses and packs each
in turn. One future, queue hand-off and wake-up per file cost as much as reading the file, and
threads that wake each other per file mostly wait for the GIL. One large file at a time is cut by
the chunker (a stream chunker holds a buffer of twice the largest chunk).
The blob threads hash, compress, encrypt and pack chunks (`save_blob`, C code that releases the
GIL, so two cores are used). Memory is bounded: at most `max_files` large files, a few batches of
small ones and `max_chunks` chunks are in flight, whatever the size of the files.

A file that changes while it is read is stored as read: its size is the number of bytes stored,
and `changed` says so.

Holes cost nothing: a large file is read extent by extent (`sparse_extents`, SEEK_DATA/SEEK_HOLE),
a hole is never read nor chunked but written in the content as zero blob ids, and so is a chunk
that happens to be all zeros (repo/zero_blobs.py; docs/repository.md, "Holes and zero runs").
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Protocol, cast

from shadowvault.archive.seal_workers import BATCHES_QUEUED, SealedFile, SealWorkers, WorkerGone
from shadowvault.archive.small_files import (
    FileError,
    changed_since,
    open_for_reading,
    os_reason,
    read_upto,
    regular_file_stat,
)
from shadowvault.archive.sparse_extents import Segment, SegmentReader, file_segments, zero_run_end
from shadowvault.archive.store import BlobStore, Chunker
from shadowvault.archive.walk_stats import WalkStats
from shadowvault.errors import IntegrityError
from shadowvault.repo.chunk_windows import ChunkWindows, Window
from shadowvault.repo.format import BlobType
from shadowvault.repo.tree import Node
from shadowvault.repo.zero_blobs import ZEROS, is_zeros
from shadowvault.slots import Slots

log = logging.getLogger(__name__)


@dataclass
class StoredContent:
    """What was stored of one file: its DATA blobs, their total length, whether it changed meanwhile."""

    blob_ids: list[bytes]
    size: int
    changed: bool = False


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
        self.store = store
        self.chunker = chunker
        self.windows = windows  # large files cut in place (chunk_windows.py), else by `chunker`
        self.stats = stats
        self.single_chunk = single_chunk  # files smaller than this are one chunk: read whole
        workers = blob_workers or max(2, os.cpu_count() or 2)
        self.readers = ThreadPoolExecutor(read_workers, thread_name_prefix="sv-read")
        # files of a chunk or more on threads of their own (one is cut at a time, `large_file`; the
        # other opens the next meanwhile): in one queue with the small files' batches they took
        # every reader thread, the batches waited for the last large file, and the directories
        # walked meanwhile were held whole (a 5 % change of 100k files: +100 MiB; the seal workers
        # idle while the large files were read)
        self.large_readers = ThreadPoolExecutor(LARGE_READERS, thread_name_prefix="sv-read-large")
        self.blobbers = ThreadPoolExecutor(workers, thread_name_prefix="sv-blob")
        self.file_slots = Slots(max_files)  # Ctrl-C cannot wedge these (shadowvault/slots.py)
        self.chunk_slots = Slots(max_chunks or 2 * workers + 2)
        self.large_file = threading.Lock()
        self._zeros_stored: set[bytes] = set()  # zero blobs saved (or found) in this backup
        self._zeros_lock = threading.Lock()
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

    def _stored(self, node: Node, sealed: SealedFile) -> StoredContent:
        """Store what a worker sealed of one file, as `_read_file` would have stored it."""
        node.mtime_ns, node.ctime_ns, node.inode = sealed.mtime_ns, sealed.ctime_ns, sealed.inode
        node.sparse = sealed.sparse
        if not sealed.size:
            return StoredContent([], 0, sealed.changed)
        if sealed.zeros:
            blob_ids = self._zero_run(sealed.size)
        else:
            self.store.save_sealed(
                BlobType.DATA, sealed.blob_id, sealed.sealed, sealed.size, sealed.compressed
            )
            blob_ids = [sealed.blob_id]
        self._count_chunk(sealed.size)
        return StoredContent(blob_ids, sealed.size, sealed.changed)

    def _file_done(self, _fut: Future[StoredContent]) -> None:
        self.file_slots.release()
        with self.stats.lock:
            self.stats.files_done += 1

    def shutdown(self, *, cancel: bool = False) -> None:
        """Wait for the threads (`cancel`: drop the queued work instead of reading every queued file)."""
        wait = not cancel
        self.readers.shutdown(wait=wait, cancel_futures=cancel)
        self.large_readers.shutdown(wait=wait, cancel_futures=cancel)
        self.blobbers.shutdown(wait=wait, cancel_futures=cancel)
        if self._sealers is not None:
            self._sealers.shutdown()

    def _read_file(self, read_path: bytes, node: Node, label: bytes = b"") -> StoredContent:
        """Cut one file into chunks and save them: the DATA blob ids in order, and how many bytes.

        The node gets the metadata of what is read (fstat of the open file), except its size, which
        is the number of bytes stored (set when the tree is written): a file that grows or shrinks
        while it is read is restored as it was read, and the change is reported."""
        self.stats.reading_path = label or read_path  # shown by progress (one writer at a time suffices)
        fd = open_for_reading(read_path)
        pending: list[Future[list[bytes]]] = []
        try:
            st = regular_file_stat(fd)
            # the file may have changed since the walk's lstat: describe what was actually read
            node.mtime_ns, node.ctime_ns, node.inode = st.st_mtime_ns, st.st_ctime_ns, st.st_ino
            node.sparse = st.st_blocks * 512 < st.st_size
            if st.st_size < self.single_chunk:
                data = read_upto(fd, self.single_chunk, st.st_size + 1)
                if len(data) < self.single_chunk:  # the whole file: one chunk
                    blob_ids = self._save_chunk(data) if data else []
                    return StoredContent(blob_ids, len(data), changed_since(fd, st, len(data)))
            # one large file is cut at a time: a stream chunker holds a buffer of twice the largest
            # chunk, and the blob threads already work on its chunks in parallel
            stored = 0
            with self.large_file:
                for segment in file_segments(fd, st.st_size, min_hole=self.single_chunk):
                    if segment.hole:
                        pending.append(self._zeros(segment.length, hole=True))
                        stored += segment.length
                        continue
                    read, complete = self._cut_segment(fd, segment, pending)
                    stored += read
                    if not complete:
                        break  # it shrank while it was read: what follows would be misplaced
            blob_ids = self._merge_zero_runs([blob_id for fut in pending for blob_id in fut.result()])
            return StoredContent(blob_ids, stored, changed_since(fd, st, stored))
        except OSError as err:
            for fut in pending:
                fut.cancel()
            raise FileError(os_reason(err)) from err
        except IntegrityError as err:
            raise FileError(str(err)) from err
        finally:
            os.close(fd)

    def _cut_segment(self, fd: int, segment: Segment, pending: list[Future[list[bytes]]]) -> tuple[int, bool]:
        """Chunk one data segment, its runs of written zeros recorded as zeros; the bytes read, and
        whether the whole segment was there (False: the file ended before it did)."""
        read, start = 0, segment.start
        while True:
            reader = SegmentReader(fd, start, segment.end, min_hole=self.single_chunk)
            read += self._cut(reader, pending)
            if reader.zero_run is None:
                return read, segment.end is None or reader.position >= segment.end
            run_end = zero_run_end(fd, reader.zero_run, segment.end)
            pending.append(self._zeros(run_end - reader.zero_run, hole=False))
            read += run_end - reader.zero_run
            start = run_end
            if segment.end is not None and start >= segment.end:
                return read, True

    def _cut(self, stream: SegmentReader, pending: list[Future[list[bytes]]]) -> int:
        """Chunk a stream, handing each chunk to the blob threads; the bytes read."""
        if self.windows is not None:
            return self._cut_in_place(self.windows, stream, pending)
        read = 0
        with stream:
            for chunk in self.chunker(cast(BinaryIO, stream)):
                read += len(chunk)
                pending.append(self._submit_chunk(chunk, None))
        return read

    def _cut_in_place(
        self, windows: ChunkWindows, stream: SegmentReader, pending: list[Future[list[bytes]]]
    ) -> int:
        """`_cut` with the chunks as views of the windows they were read into, each window
        released by the blob thread that stored its chunk."""
        read = 0
        chunks = windows.chunks(stream)
        try:
            with stream:
                for view, window in chunks:
                    read += len(view)
                    pending.append(self._submit_chunk(view, window))
        finally:
            chunks.close()  # its window given back now, not when the exception holding it is freed
        return read

    def _submit_chunk(self, chunk: bytes | memoryview, window: Window | None) -> Future[list[bytes]]:
        """Store a chunk on a blob thread (waits while `max_chunks` are in flight); once stored or
        abandoned, its slot and its window's hold are given back."""
        windows = self.windows

        def release_window() -> None:
            if window is not None and windows is not None:
                windows.release(window)

        def done(_fut: Future[list[bytes]]) -> None:
            self.chunk_slots.release()
            release_window()

        try:
            self.chunk_slots.acquire()
        except BaseException:  # interrupted while waiting: the chunk goes nowhere
            release_window()
            raise
        try:
            fut = self.blobbers.submit(self._save_chunk, chunk)
        except BaseException:
            self.chunk_slots.release()
            release_window()
            raise
        fut.add_done_callback(done)
        return fut

    def _zeros(self, length: int, *, hole: bool) -> Future[list[bytes]]:
        """A run of zeros: a hole (not read) or written zeros (read): zero blob ids."""
        done: Future[list[bytes]] = Future()
        done.set_result(self._zero_run(length))
        with self.stats.lock:
            self.stats.bytes_done += length
            if hole:
                self.stats.bytes_holes += length
            else:
                self.stats.bytes_read += length
        return done

    def _merge_zero_runs(self, blob_ids: list[bytes]) -> list[bytes]:
        """Adjacent zero runs (a hole next to written zeros, a chunk of zeros) spelled as one run, so
        the same bytes have the same content whatever their holes."""
        zero_blobs = self.store.zero_blobs
        merged: list[bytes] = []
        run = 0
        for blob_id in blob_ids:
            size = zero_blobs.size_of(blob_id)
            if size is not None:
                run += size
                continue
            if run:
                merged.extend(self._zero_run(run))
                run = 0
            merged.append(blob_id)
        if run:
            merged.extend(self._zero_run(run))
        return merged

    def _zero_run(self, length: int) -> list[bytes]:
        """The ids of a run of zeros; each zero blob is stored once (old readers read it)."""
        zero_blobs = self.store.zero_blobs
        blob_ids = zero_blobs.run(length)
        with self._zeros_lock:  # rare: at most one save per size and backup
            for blob_id in set(blob_ids) - self._zeros_stored:
                size = zero_blobs.size_of(blob_id)
                assert size is not None
                saved = self.store.save_blob(BlobType.DATA, memoryview(ZEROS)[:size])
                assert saved == blob_id, "the zero blob ids are the ids of blobs of zeros"
                self._zeros_stored.add(blob_id)
        return blob_ids

    def _save_chunk(self, chunk: bytes | memoryview) -> list[bytes]:
        """Store one chunk (a chunk of zeros becomes zero blob ids); its blob ids."""
        if is_zeros(chunk):
            blob_ids = self._zero_run(len(chunk))
        else:
            blob_ids = [self.store.save_blob(BlobType.DATA, chunk)]
        self._count_chunk(len(chunk))
        return blob_ids

    def _count_chunk(self, length: int) -> None:
        with self.stats.lock:
            self.stats.bytes_read += length
            self.stats.bytes_done += length
            self.stats.blobs_saved += 1
