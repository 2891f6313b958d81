"""Reading files for a backup: reader threads open and cut files, blob threads store the chunks.

Small files (below the chunker's minimum: one chunk each) are read in batches: the walker gathers
them and hands a reader thread a hundred at a time, which reads, hashes, compresses and packs each
in turn. One future, queue hand-off and wake-up per file cost as much as reading the file, and
threads that wake each other per file mostly wait for the GIL. One large file at a time is cut by
the chunker (a stream chunker holds a buffer of twice the largest chunk).
The blob threads hash, compress, encrypt and pack chunks (`save_blob`, C code that releases the
GIL, so two cores are used). Memory is bounded: at most `max_files` files and `max_chunks` chunks
are in flight, whatever the size of the files.

A file that changes while it is read is stored as read: its size is the number of bytes stored,
and `changed` says so.

Holes cost nothing: a large file is read extent by extent (`sparse_extents`, SEEK_DATA/SEEK_HOLE),
a hole is never read nor chunked but written in the content as zero blob ids, and so is a chunk
that happens to be all zeros (repo/zero_blobs.py; docs/repository.md, "Holes and zero runs").
"""

from __future__ import annotations

import os
import stat
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Protocol, cast

from shadowvault.archive.sparse_extents import Segment, SegmentReader, file_segments, zero_run_end
from shadowvault.archive.store import BlobStore, Chunker
from shadowvault.archive.walk_stats import WalkStats, os_reason
from shadowvault.errors import IntegrityError
from shadowvault.repo.format import BlobType
from shadowvault.repo.tree import Node
from shadowvault.repo.zero_blobs import ZEROS, is_zeros

_NOATIME = getattr(os, "O_NOATIME", 0)  # Linux only
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | _NOATIME


class FileError(Exception):
    """A file could not be read; the message is the reason shown to the user."""


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
    ) -> None:
        self.store = store
        self.chunker = chunker
        self.stats = stats
        self.single_chunk = single_chunk  # files smaller than this are one chunk: read whole
        workers = blob_workers or max(2, os.cpu_count() or 2)
        self.readers = ThreadPoolExecutor(read_workers, thread_name_prefix="sv-read")
        self.blobbers = ThreadPoolExecutor(workers, thread_name_prefix="sv-blob")
        self.file_slots = threading.BoundedSemaphore(max_files)
        self.chunk_slots = threading.BoundedSemaphore(max_chunks or 2 * workers + 2)
        self.large_file = threading.Lock()
        self._zeros_stored: set[bytes] = set()  # zero blobs saved (or found) in this backup
        self._zeros_lock = threading.Lock()
        self._batch: list[tuple[bytes, Node, bytes, BatchedFile]] = []  # gathered by the walker
        self._batch_bytes = 0

    def submit(self, access: bytes, node: Node, label: bytes = b"") -> PendingContent:
        """Read the file at `access` (its original path: `label`) on a reader thread (waits while
        `max_files` files or batches are in flight). A small file joins the batch being gathered."""
        if node.size < self.single_chunk:
            slot = BatchedFile()
            self._batch.append((access, node, label, slot))
            self._batch_bytes += node.size
            if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
                self.flush()
            return slot
        self.file_slots.acquire()
        try:
            fut = self.readers.submit(self._read_file, access, node, label)
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
        self.file_slots.acquire()
        try:
            fut = self.readers.submit(self._read_batch, batch)
        except BaseException:
            self.file_slots.release()
            raise
        for *_, slot in batch:
            slot.batch = fut
        fut.add_done_callback(lambda _f: self.file_slots.release())

    def _read_batch(self, batch: list[tuple[bytes, Node, bytes, BatchedFile]]) -> None:
        """Read the files of a batch one after the other; a file's failure is its own."""
        for access, node, label, slot in batch:
            try:
                slot.value = self._read_file(access, node, label)
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
        self.blobbers.shutdown(wait=wait, cancel_futures=cancel)

    def _read_file(self, read_path: bytes, node: Node, label: bytes = b"") -> StoredContent:
        """Cut one file into chunks and save them: the DATA blob ids in order, and how many bytes.

        The node gets the metadata of what is read (fstat of the open file), except its size, which
        is the number of bytes stored (set when the tree is written): a file that grows or shrinks
        while it is read is restored as it was read, and the change is reported."""
        self.stats.reading_path = label or read_path  # shown by progress (one writer at a time suffices)
        try:
            fd = os.open(read_path, _OPEN_FLAGS)
        except PermissionError:
            try:
                fd = os.open(read_path, _OPEN_FLAGS & ~_NOATIME)
            except OSError as err:
                raise FileError(err.strerror or str(err)) from err
        except OSError as err:
            raise FileError(err.strerror or str(err)) from err
        pending: list[Future[list[bytes]]] = []
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise FileError("changed into something that is not a regular file")
            # the file may have changed since the walk's lstat: describe what was actually read
            node.mtime_ns, node.ctime_ns, node.inode = st.st_mtime_ns, st.st_ctime_ns, st.st_ino
            node.sparse = st.st_blocks * 512 < st.st_size
            if st.st_size < self.single_chunk:
                data = self._read_upto(fd, self.single_chunk, st.st_size + 1)
                if len(data) < self.single_chunk:  # the whole file: one chunk
                    blob_ids = self._save_chunk(data) if data else []
                    return StoredContent(blob_ids, len(data), self._changed(fd, st, len(data)))
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
            return StoredContent(blob_ids, stored, self._changed(fd, st, stored))
        except OSError as err:
            for fut in pending:
                fut.cancel()
            raise FileError(os_reason(err)) from err
        except IntegrityError as err:
            raise FileError(str(err)) from err
        finally:
            os.close(fd)

    @staticmethod
    def _changed(fd: int, before: os.stat_result, stored: int) -> bool:
        """Whether the file changed while it was read: not the size its fstat said, or written since."""
        after = os.fstat(fd)
        return (
            stored != before.st_size
            or after.st_size != before.st_size
            or after.st_mtime_ns != before.st_mtime_ns
            or after.st_ctime_ns != before.st_ctime_ns
        )

    @staticmethod
    def _read_upto(fd: int, limit: int, expected: int) -> bytes:
        """Up to `limit` bytes from the start of the file (fewer at end of file); reads of `expected`
        bytes first, so a small file costs a small buffer. `expected` is the size fstat gave plus
        one: a read that stops short of it right at that size is at the end of the file (a file
        that grew meanwhile is told by its fstat afterwards), so a small file costs one read."""
        parts, got = [], 0
        while got < limit:
            wanted = min(limit - got, max(expected - got, 4096))
            block = os.read(fd, wanted)
            if not block:
                break
            parts.append(block)
            got += len(block)
            if len(block) < wanted and got == expected - 1:
                break
        return b"".join(parts)

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
        read = 0
        with stream:
            for chunk in self.chunker(cast(BinaryIO, stream)):
                read += len(chunk)
                self.chunk_slots.acquire()
                try:
                    fut = self.blobbers.submit(self._save_chunk, chunk)
                except BaseException:
                    self.chunk_slots.release()
                    raise
                fut.add_done_callback(lambda _f: self.chunk_slots.release())
                pending.append(fut)
        return read

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

    def _save_chunk(self, chunk: bytes) -> list[bytes]:
        """Store one chunk (a chunk of zeros becomes zero blob ids); its blob ids."""
        if is_zeros(chunk):
            blob_ids = self._zero_run(len(chunk))
        else:
            blob_ids = [self.store.save_blob(BlobType.DATA, chunk)]
        with self.stats.lock:
            self.stats.bytes_read += len(chunk)
            self.stats.bytes_done += len(chunk)
            self.stats.blobs_saved += 1
        return blob_ids
