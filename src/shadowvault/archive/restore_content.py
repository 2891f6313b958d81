"""File content for a restore: files are written in batches, their blobs read with each pack read once.

A batch is a few hundred files (or a few large ones). Its files are created under temporary names;
then the blobs they need are grouped by pack and each pack's needed span is read once
(`pack_reads`), every blob verified and written to every place that needs it (a blob shared by
several files, or repeated in one file, is read once); then each file gets its metadata, is read
back when `verify` asks, and is renamed to its name. Memory is bounded by the batch (its plan is a
few dozen bytes per blob) and by the pack span one read holds, never by a pack or a file.

A blob that fails verification fails only the files that need it (after its other copies were
tried). The phases of a batch run on the restore's worker pool and are driven by a thread that is
not in the pool: no pool thread ever waits for another.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, Executor, Future, wait
from dataclasses import dataclass, field
from typing import TypeVar

import blake3

from shadowvault.archive.pack_reads import PackedBlobs, PackRange, WantedBlob, plan_ranges, read_range
from shadowvault.archive.restore_entries import (
    FILE_FLAGS,
    EntryError,
    EntryWriter,
    Restored,
    TargetDir,
    discard,
    reason,
)
from shadowvault.errors import ShadowvaultError
from shadowvault.repo.index import BlobLocation
from shadowvault.repo.tree import Node

log = logging.getLogger(__name__)

HOLE_BLOCK = 4096
_ZEROS = bytes(HOLE_BLOCK)
BATCH_FILES = 256  # files (and so descriptors) one batch holds open
BATCH_BYTES = 256 << 20  # content one batch plans (a larger file is a batch of its own)

_T = TypeVar("_T")


@dataclass(eq=False)
class FileWrite:
    """One file being restored: where it is written, what of it is known, what went wrong."""

    node: Node
    spath: bytes
    here: TargetDir
    done: Future[Restored] = field(default_factory=Future)
    tmp: bytes = b""
    fd: int | None = None
    size: int = 0
    lengths: list[int] = field(default_factory=list)  # per blob of node.content
    digests: list[bytes] = field(default_factory=list)  # per blob, of what was written (verify only)
    failure: str | None = None


@dataclass(frozen=True)
class _Place:
    """Where one blob goes: a file, the offset in it, the blob's position in the file's content."""

    file: FileWrite
    offset: int
    index: int


def write_at(fd: int, data: bytes, offset: int, *, sparse: bool) -> None:
    """Write `data` at `offset`; for a file that had holes, aligned all-zero blocks stay holes."""
    if sparse:
        _write_sparse(fd, data, offset)
        return
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _write_sparse(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    pos = 0
    end = len(data)
    while pos < end:
        block_end = min(end, pos + HOLE_BLOCK - (offset + pos) % HOLE_BLOCK)
        start = pos
        # gather a run of blocks of the same kind (data or zeros)
        zero = view[pos:block_end] == _ZEROS[: block_end - pos]
        pos = block_end
        while pos < end:
            nxt = min(end, pos + HOLE_BLOCK)
            if (view[pos:nxt] == _ZEROS[: nxt - pos]) != zero:
                break
            pos = nxt
        if not zero:
            write_at(fd, bytes(view[start:pos]), offset + start, sparse=False)


def verify_file(fd: int, lengths: list[int], digests: list[bytes]) -> None:
    """Read the restored file back through its own descriptor, blob by blob, and compare hashes."""
    offset = 0
    for length, digest in zip(lengths, digests, strict=True):
        parts: list[bytes] = []
        got = 0
        while got < length and (block := os.pread(fd, length - got, offset + got)):
            parts.append(block)
            got += len(block)
        if got != length or blake3.blake3(b"".join(parts)).digest() != digest:
            raise EntryError("verification failed: the restored bytes differ from the snapshot")
        offset += length
    if os.pread(fd, 1, offset):
        raise EntryError("verification failed: the restored bytes differ from the snapshot")


def _each(pool: Executor, task: Callable[[_T], None], items: Iterable[_T]) -> None:
    """Run `task` on every item in the pool and wait for all of them (tasks record their own
    failures; what comes out here is an interruption)."""
    futures: list[Future[None]] = []
    try:
        for item in items:
            futures.append(pool.submit(task, item))
    finally:
        wait(futures)
    for fut in futures:
        if fut.cancelled():
            raise CancelledError()
        err = fut.exception()
        if err is not None:
            raise err


class ContentBatch:
    """Files whose content is restored together, each pack they need read once."""

    def __init__(self, store: PackedBlobs, entries: EntryWriter, *, verify: bool) -> None:
        self.store = store
        self.entries = entries
        self.verify = verify
        self.files: list[FileWrite] = []
        self.planned_bytes = 0
        self._futures: set[Future[Restored]] = set()
        self._lock = threading.Lock()

    def add(self, node: Node, spath: bytes, here: TargetDir) -> Future[Restored]:
        """Take a file into the batch; its future resolves when the file is restored (or not)."""
        file = FileWrite(node, spath, here)
        self.files.append(file)
        self.planned_bytes += node.size
        self._futures.add(file.done)
        return file.done

    def full(self) -> bool:
        return len(self.files) >= BATCH_FILES or self.planned_bytes >= BATCH_BYTES

    def holds(self, fut: Future[Restored]) -> bool:
        return fut in self._futures

    def run(self, pool: Executor) -> None:
        """Create the files, read and write their blobs pack by pack, finish and rename them."""
        try:
            _each(pool, self._create, self.files)
            live = [f for f in self.files if f.fd is not None]
            places, alone = self._plan(live)
            ranges = plan_ranges(WantedBlob(blob_id, location) for blob_id, (location, _) in places.items())
            _each(pool, lambda planned: self._read(planned, places), ranges)
            _each(pool, self._write_alone, alone)
            _each(pool, self._finish, live)
        finally:
            self._abandon_unfinished()

    def run_here(self) -> None:
        """The same, one step after another in this thread (a single file, from a worker)."""
        try:
            for file in self.files:
                self._create(file)
                if file.fd is not None:
                    self._write_alone(file)
                    self._finish(file)
        finally:
            self._abandon_unfinished()

    # -- the steps (worker threads) ----------------------------------------------------------------

    def _create(self, file: FileWrite) -> None:
        try:
            if not self.entries.wanted(file.node, file.spath, file.here):
                file.done.set_result(None)
                return
            file.tmp = self.entries.new_tmp()
            file.fd = os.open(file.tmp, FILE_FLAGS, 0o600, dir_fd=file.here.fd)
        except Exception as err:
            self.entries.error(file.spath, reason(err))
            file.done.set_result(None)

    def _plan(
        self, files: list[FileWrite]
    ) -> tuple[dict[bytes, tuple[BlobLocation, list[_Place]]], list[FileWrite]]:
        """Where each needed blob goes; the files with a blob the index does not place are read
        blob by blob (`load_blob` reloads the index, or says what is missing)."""
        places: dict[bytes, tuple[BlobLocation, list[_Place]]] = {}
        alone: list[FileWrite] = []
        for file in files:
            located = [self.store.lookup(blob_id) for blob_id in file.node.content]
            if any(location is None for location in located):
                alone.append(file)
                continue
            offset = 0
            for index, (blob_id, location) in enumerate(zip(file.node.content, located, strict=True)):
                assert location is not None
                places.setdefault(blob_id, (location, []))[1].append(_Place(file, offset, index))
                offset += location.raw_length
                file.lengths.append(location.raw_length)
            file.size = offset
            file.digests = [b""] * len(file.lengths)
        return places, alone

    def _read(self, planned: PackRange, places: dict[bytes, tuple[BlobLocation, list[_Place]]]) -> None:
        try:
            for blob, got in read_range(self.store, planned):
                targets = places[blob.blob_id][1]
                if isinstance(got, ShadowvaultError):
                    for place in targets:
                        self._fail(place.file, reason(got))
                    continue
                digest = blake3.blake3(got).digest() if self.verify else b""
                for place in targets:
                    self._put(place, got, digest)
        except Exception as err:
            log.debug("reading %s failed", planned.pack, exc_info=True)
            for blob in planned.blobs:
                for place in places[blob.blob_id][1]:
                    self._fail(place.file, reason(err))

    def _put(self, place: _Place, data: bytes, digest: bytes) -> None:
        file = place.file
        if file.failure is not None or file.fd is None:
            return
        try:
            write_at(file.fd, data, place.offset, sparse=file.node.sparse)
        except OSError as err:
            self._fail(file, reason(err))
            return
        file.digests[place.index] = digest
        with self.entries.stats.lock:
            self.entries.stats.bytes_written += len(data)

    def _write_alone(self, file: FileWrite) -> None:
        """Every blob of the file through `load_blob`, in order."""
        assert file.fd is not None
        offset = 0
        file.lengths, file.digests = [], []
        try:
            for blob_id in file.node.content:
                data = self.store.load_blob(blob_id)
                write_at(file.fd, data, offset, sparse=file.node.sparse)
                file.lengths.append(len(data))
                file.digests.append(blake3.blake3(data).digest() if self.verify else b"")
                offset += len(data)
                with self.entries.stats.lock:
                    self.entries.stats.bytes_written += len(data)
        except Exception as err:
            self._fail(file, reason(err))
        file.size = offset

    def _fail(self, file: FileWrite, why: str) -> None:
        with self._lock:
            if file.failure is None:
                file.failure = why

    def _finish(self, file: FileWrite) -> None:
        """Metadata, verification and the rename to its name; or the temporary file goes."""
        here, fd = file.here, file.fd
        assert here.fd is not None and fd is not None
        result: Restored = None
        try:
            try:
                if file.failure is not None:
                    raise EntryError(file.failure)
                if file.node.sparse:
                    os.ftruncate(fd, file.size)
                self.entries.finish_file(fd, file.node, here)
                if self.verify:
                    verify_file(fd, file.lengths, file.digests)
                    with self.entries.stats.lock:
                        self.entries.stats.verified += 1
            finally:
                file.fd = None
                os.close(fd)
            os.rename(file.tmp, file.node.name, src_dir_fd=here.fd, dst_dir_fd=here.fd)
            result = self.entries.restored(file.node, here)
        except Exception as err:
            discard(here.fd, file.tmp)
            self.entries.error(file.spath, reason(err))
        file.done.set_result(result)

    def _abandon_unfinished(self) -> None:
        """After an interruption: close and remove what was started, resolve every future."""
        for file in self.files:
            if file.done.done():
                continue
            if file.fd is not None:
                os.close(file.fd)
                file.fd = None
                if file.here.fd is not None:
                    discard(file.here.fd, file.tmp)
            file.done.set_exception(EntryError("not restored: the restore was interrupted"))
