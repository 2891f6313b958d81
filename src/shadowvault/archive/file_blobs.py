"""One file's content into DATA blobs: read whole, or cut into chunks that blob threads store.

A file below the chunker's minimum is one chunk, read whole. One large file at a time is cut by the
chunker (a stream chunker holds a buffer of twice the largest chunk); the blob threads hash,
compress, encrypt and pack its chunks (`save_blob`, C code that releases the GIL, so two cores are
used), at most `max_chunks` in flight. What a seal worker sealed of a small file is stored here as
its read would have been.

A file that changes while it is read is stored as read: its size is the number of bytes stored,
and `changed` says so.

Holes cost nothing: a large file is read extent by extent (`sparse_extents`, SEEK_DATA/SEEK_HOLE),
a hole is never read nor chunked but written in the content as zero blob ids, and so is a chunk
that happens to be all zeros (repo/zero_blobs.py; docs/repository.md, "Holes and zero runs").
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, cast

from shadowvault.archive.seal_workers import SealedFile
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
from shadowvault.cancellation import check
from shadowvault.errors import IntegrityError
from shadowvault.repo.chunk_windows import ChunkWindows, Window
from shadowvault.repo.format import BlobType
from shadowvault.repo.tree import Node
from shadowvault.repo.zero_blobs import ZEROS, is_zeros
from shadowvault.slots import Slots


@dataclass
class StoredContent:
    """What was stored of one file: its DATA blobs, their total length, whether it changed meanwhile."""

    blob_ids: list[bytes]
    size: int
    changed: bool = False


class FileBlobs:
    """Reads a file into DATA blobs on the calling thread, its chunks stored on blob threads of its
    own within bounded memory."""

    def __init__(
        self,
        store: BlobStore,
        chunker: Chunker,
        stats: WalkStats,
        *,
        single_chunk: int,
        blob_workers: int | None = None,
        max_chunks: int | None = None,
        windows: ChunkWindows | None = None,
    ) -> None:
        self.store = store
        self.chunker = chunker
        self.windows = windows  # large files cut in place (repo/chunk_windows.py), else by `chunker`
        self.stats = stats
        self.single_chunk = single_chunk  # files smaller than this are one chunk: read whole
        workers = blob_workers or max(2, os.cpu_count() or 2)
        self.blobbers = ThreadPoolExecutor(workers, thread_name_prefix="sv-blob")
        # chunks in flight; Ctrl-C cannot wedge these slots (shadowvault/slots.py)
        self.chunk_slots = Slots(max_chunks or 2 * workers + 2)
        self.large_file = threading.Lock()
        self._zeros_stored: set[bytes] = set()  # zero blobs saved (or found) in this backup
        self._zeros_lock = threading.Lock()

    def shutdown(self, *, cancel: bool = False) -> None:
        """Wait for the blob threads (`cancel`: drop the chunks queued)."""
        self.blobbers.shutdown(wait=not cancel, cancel_futures=cancel)

    def read_file(self, read_path: bytes, node: Node, label: bytes = b"") -> StoredContent:
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

    def stored(self, node: Node, sealed: SealedFile) -> StoredContent:
        """Store what a worker sealed of one file, as `read_file` would have stored it."""
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
        """Chunk a stream, handing each chunk to the blob threads; the bytes read. Cancelled, it
        stops after the chunk in hand (the backup unwinds: no snapshot refers to its chunks)."""
        if self.windows is not None:
            return self._cut_in_place(self.windows, stream, pending)
        read = 0
        cancellation = self.stats.cancellation
        with stream:
            for chunk in self.chunker(cast(BinaryIO, stream)):
                read += len(chunk)
                pending.append(self._submit_chunk(chunk, None))
                check(cancellation)
        return read

    def _cut_in_place(
        self, windows: ChunkWindows, stream: SegmentReader, pending: list[Future[list[bytes]]]
    ) -> int:
        """`_cut` with the chunks as views of the windows they were read into, each window
        released by the blob thread that stored its chunk."""
        read = 0
        chunks = windows.chunks(stream)
        cancellation = self.stats.cancellation
        try:
            with stream:
                for view, window in chunks:
                    read += len(view)
                    pending.append(self._submit_chunk(view, window))
                    check(cancellation)
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
