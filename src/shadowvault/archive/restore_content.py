"""File content for a restore: files are written in batches, each pack they need read once.

A batch is up to a thousand files. Its plan (`restore_plan`) groups the blobs its files need by
pack, each blob once however many files (or places in one file) need it; each pack is then read in
one ranged read covering its needed blobs (`pack_reads` states when a pack takes more than one), by
at most READS_AT_ONCE readers per batch (`restore_reads`); every blob is decrypted and verified
once and written, by the thread that read it (no hand-over: Python threads pay for every switch),
to every place that needs it. A file is created (unnamed with O_TMPFILE, else under a temporary
name; opened once, with its own mode and owner when that is all its metadata but times:
`EntryWriter.create_mode`) when its first blob arrives, and as soon as its last blob is written it
gets its metadata, is read back when `verify` asks, and is linked or renamed to its name, by the
thread that wrote that blob: nothing is ever half-written under its final name, and a file of one
blob holds a descriptor only while it is written. (An unnamed file costs one directory update where
a temporary name costs three: 21 against 30-43 us a file on ext4.) With restore worker processes
(restore_workers.py), a file of one blob, new in a directory this restore made, is made whole by
the worker that decodes its blob. A batch is cut when it holds BATCH_FILES files, BATCH_BYTES of
content, or BATCH_SPANNING files of several blobs (those may hold a descriptor from their first
blob to their last), so descriptors stay bounded; a pack needed by two batches is read by each.

A blob that stands for a run of zeros (a hole: repo/zero_blobs.py) is never fetched, decrypted or
written: the file is extended to its size (ftruncate), so a file that had holes has them again;
a file that had none (a swap file, a preallocated database) gets its zero runs allocated
(fallocate), still without writing them. `verify` checks those runs read back as zeros, skipping
what the filesystem reports as holes.

Memory is bounded: a batch's plan is a few dozen bytes per blob and a few hundred per file, and
what the whole restore holds of packs is bounded by its `ReadBudget` (24 MiB: a range counts in
full until its blobs are written; a range larger than the budget waits until it is alone). A range
that worker processes read holds none of it: its bytes are in a worker, one window at a time, so
its range is a batch's whole need of the pack, gaps and all (one task, not one per run of blobs).
A blob that fails verification fails only the files that need it (after its other copies were
tried). The phases of a batch run on the restore's worker pool and are driven by a thread that is
not in the pool: no pool thread ever waits for another.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import CancelledError, Executor, Future

import blake3

from shadowvault.archive.blob_writes import allocate_zero_runs, verify_file, write_at
from shadowvault.archive.pack_reads import MAX_GAP, MAX_SPAN, PackedBlobs, ReadBudget, WantedBlob, plan_ranges
from shadowvault.archive.pool_waits import each, wait_all
from shadowvault.archive.restore_entries import (
    EntryError,
    EntryWriter,
    TargetDir,
    create_file,
    discard,
    reason,
)
from shadowvault.archive.restore_outcomes import Outcome, Pending, Restored
from shadowvault.archive.restore_plan import FileWrite, Place, add_zero_run, plan
from shadowvault.archive.restore_reads import read_all
from shadowvault.archive.restore_workers import RestoreWorkers
from shadowvault.archive.unnamed_files import link_unnamed
from shadowvault.cancellation import check
from shadowvault.errors import JobCancelledError
from shadowvault.repo.tree import Node

BATCH_FILES = 1024  # files one batch plans (a file of one blob holds a descriptor only while written)
BATCH_BYTES = 1 << 30  # content one batch plans (a larger file is a batch of its own)
BATCH_SPANNING = 256  # files of several blobs one batch plans: each may hold a descriptor throughout
FILES_PER_TASK = 8  # files a worker checks or finishes in one task


def _groups(files: list[FileWrite]) -> list[list[FileWrite]]:
    return [files[at : at + FILES_PER_TASK] for at in range(0, len(files), FILES_PER_TASK)]


class ContentBatch:
    """Files whose content is restored together, each pack they need read once."""

    def __init__(
        self, store: PackedBlobs, entries: EntryWriter, *, verify: bool, budget: ReadBudget | None = None
    ) -> None:
        self.store = store
        self.entries = entries
        self.verify = verify
        self.budget = budget or ReadBudget()
        self.files: list[FileWrite] = []
        self.planned_bytes = 0
        self.spanning = 0  # files with more than one blob to read
        self._futures: set[Pending] = set()
        self._settled = threading.Event()  # every file's outcome is resolved
        self._lock = threading.Lock()
        self._pool: Executor | None = None
        self._finishing: list[Future[None]] = []
        self.workers: RestoreWorkers | None = None  # worker processes that write pack ranges, if any

    def add(self, node: Node, spath: bytes, here: TargetDir) -> Outcome:
        """Take a file into the batch; its outcome resolves when the file is restored (or not)."""
        size_of = self.store.zero_blobs.size_of  # runs of zeros cost nothing: they do not fill a batch
        sizes = [size_of(b) for b in node.content]
        file = FileWrite(node, spath, here, Outcome(self._settled), sizes)
        self.files.append(file)
        if len(sizes) == 1:  # most files: one blob (or none)
            self.planned_bytes += node.size if sizes[0] is None else 0
        else:
            self.planned_bytes += node.size - sum(size or 0 for size in sizes)
            if sum(size is None for size in sizes) > 1:
                self.spanning += 1
        self._futures.add(file.done)
        return file.done

    def full(self) -> bool:
        return (
            len(self.files) >= BATCH_FILES
            or self.planned_bytes >= BATCH_BYTES
            or self.spanning >= BATCH_SPANNING
        )

    def holds(self, fut: Pending) -> bool:
        return fut in self._futures

    def run(self, pool: Executor) -> None:
        """Check what may be replaced, read every needed pack once and write its blobs to every
        place that needs them (files created on their first blob, finished on their last)."""
        try:
            check(self.entries.stats.cancellation)  # a batch planned before the restore was cancelled
            # in a directory this restore made nothing is in the way: checked here, no system call
            self._check_all([f for f in self.files if f.here.fresh])
            each(pool, self._check_all, _groups([f for f in self.files if not f.here.fresh]))
            live = [f for f in self.files if not f.done.done()]
            places, alone = plan(live, self.store.lookup)
            self._pool = pool
            self._finish_later([f for f in live if f.unwritten == 0 and f not in alone])  # no data
            wanted = (WantedBlob(blob_id, location) for blob_id, (location, _) in places.items())
            # a worker reads what it needs of a range itself, skipping the gaps
            ranges = plan_ranges(wanted, max_gap=MAX_SPAN if self.workers is not None else MAX_GAP)
            read_all(self, pool, ranges, places)
            each(pool, self._write_alone_and_finish, alone)
            wait_all(self._finishing)
            if any(fut.cancelled() for fut in self._finishing):
                raise CancelledError()
        finally:
            wait_all(self._finishing)  # interrupted: no worker may still hold a file abandoned below
            self._abandon_unfinished()
            self._settled.set()

    def run_here(self) -> None:
        """The same, one step after another in this thread (a single file, from a worker)."""
        try:
            for file in self.files:
                self._check(file)
                if not file.done.done():
                    self._write_alone_and_finish(file)
        finally:
            self._abandon_unfinished()
            self._settled.set()

    # -- the steps (worker threads; the public ones are restore_reads' too: its `Batch`) -----------

    def _check_all(self, files: list[FileWrite]) -> None:
        for file in files:
            self._check(file)

    def _check(self, file: FileWrite) -> None:
        """Whether the file is restored at all (what is in the way may be kept): decided before its
        blobs are planned, so a kept file costs no read."""
        try:
            if not self.entries.wanted(file.node, file.spath, file.here):
                file.done.set_result(None)
        except Exception as err:
            self.entries.error(file.spath, reason(err))
            file.done.set_result(None)

    def open(self, file: FileWrite) -> int | None:
        """The file's descriptor, created under a temporary name on first use (None once it failed)."""
        if not file.shared:  # one place: only the thread writing it gets here
            return self._create(file)
        with file.opening:
            return self._create(file)

    def _create(self, file: FileWrite) -> int | None:
        """An unnamed file in its directory (O_TMPFILE: named by `finish`, gone if the restore
        stops first), or where the filesystem has none, one under a temporary name."""
        here_fd = file.here.fd
        assert here_fd is not None
        if file.fd is None and file.failure is None:
            try:
                entries = self.entries
                mode, file.complete = entries.create_mode(file.node, file.here)
                file.fd, file.tmp = create_file(here_fd, mode, entries.new_tmp, unnamed=entries.tmpfile)
            except Exception as err:  # foreseen or not, the file's failure: not its pack range's
                self.fail(file, reason(err))
        return file.fd

    def made(self, file: FileWrite) -> None:
        """A file a worker made whole is under its name: count it and resolve its outcome."""
        if self.verify:
            with self.entries.stats.lock:
                self.entries.stats.verified += 1
        self._say_if_resized(file)
        file.done.set_result(self.entries.restored(file.node, file.here))

    def _say_if_resized(self, file: FileWrite) -> None:
        """A file whose stored content is not the size its snapshot records (a crafted or broken
        client; `check` reports it) is restored as stored, as restic does, and said to be: so a
        restore, `--verify` or not, never passes it over in silence."""
        if file.size != file.node.size:
            self.entries.warning(
                file.spath,
                f"restored as stored, {file.size} bytes, while its snapshot records {file.node.size}"
                " (its blobs' sizes do not add up to it: `shadowvault check` reports it)",
            )

    def written(self, file: FileWrite, nbytes: int = 0) -> None:
        """One place of the file is written (`nbytes` of it counted in the restore's bytes) or
        failed; after the last one the file is finished."""
        if not file.shared:  # its only place
            file.counted += nbytes
            file.unwritten = 0
            self.finish(file)
            return
        with self._lock:
            file.counted += nbytes
            file.unwritten -= 1
            last = file.unwritten == 0
        if last:
            self.finish(file)

    def _finish_later(self, files: list[FileWrite]) -> None:
        """Create and finish files with nothing to read on the pool, a few per task."""
        assert self._pool is not None
        for group in _groups(files):
            try:
                fut = self._pool.submit(self._finish_all, group)
            except RuntimeError:  # the pool is shut down: the restore was interrupted
                return
            with self._lock:
                self._finishing.append(fut)

    def _finish_all(self, files: list[FileWrite]) -> None:
        for file in files:
            self.open(file)
            self.finish(file)

    def put(self, place: Place, data: bytes, digest: bytes) -> int:
        """Write one blob to one place; the bytes written (counted by the caller)."""
        file = place.file
        if file.failure is not None:
            return 0
        fd = self.open(file)
        if fd is None:
            return 0
        try:
            write_at(fd, data, place.offset, sparse=file.node.sparse)
        except OSError as err:
            self.fail(file, reason(err))
            return 0
        file.digests[place.index] = digest
        return len(data)

    def _write_alone_and_finish(self, file: FileWrite) -> None:
        if self.open(file) is not None:
            self._write_alone(file)
        self.finish(file)

    def _write_alone(self, file: FileWrite) -> None:
        """Every blob of the file through `load_blob`, in order (cancelled: the file is left to
        `_abandon_unfinished`)."""
        assert file.fd is not None
        offset = 0
        file.lengths, file.digests, file.zero_runs = [], [], []
        zero_blobs = self.store.zero_blobs
        cancellation = self.entries.stats.cancellation
        try:
            for blob_id in file.node.content:
                check(cancellation)
                zeros = zero_blobs.size_of(blob_id)
                if zeros is not None:  # a run of zeros: nothing to read or write
                    offset = add_zero_run(file, offset, zeros)
                    continue
                data = self.store.load_blob(blob_id)
                write_at(file.fd, data, offset, sparse=file.node.sparse)
                file.lengths.append(len(data))
                file.digests.append(blake3.blake3(data).digest() if self.verify else b"")
                offset += len(data)
                file.counted += len(data)
                with self.entries.stats.lock:
                    self.entries.stats.bytes_written += len(data)
        except JobCancelledError:
            raise
        except Exception as err:
            self.fail(file, reason(err))
        file.size = offset

    def fail(self, file: FileWrite, why: str) -> None:
        with self._lock:
            if file.failure is None:
                file.failure = why

    def finish(self, file: FileWrite) -> None:
        """Metadata, verification and the rename to its name; or the temporary file goes."""
        here, fd = file.here, file.fd
        assert here.fd is not None
        result: Restored = None
        if fd is None:  # failed before it was created: nothing on disk
            self._failed(file, file.failure or "not restored")
            file.done.set_result(result)
            return
        try:
            try:
                if file.failure is not None:
                    raise EntryError(file.failure)
                if file.zero_runs and not file.node.sparse:
                    allocate_zero_runs(fd, file.zero_runs)
                if file.node.sparse or file.zero_runs:
                    os.ftruncate(fd, file.size)
                self.entries.finish_file(fd, file.node, here, complete=file.complete)
                if self.verify:
                    verify_file(fd, file.lengths, file.digests)
                    with self.entries.stats.lock:
                        self.entries.stats.verified += 1
                if not file.tmp:
                    self._name_unnamed(fd, file)
            finally:
                file.fd = None
                os.close(fd)
            if file.tmp:
                os.rename(file.tmp, file.node.name, src_dir_fd=here.fd, dst_dir_fd=here.fd)
            result = self.entries.restored(file.node, here)
            self._say_if_resized(file)
        except Exception as err:
            if file.tmp:
                discard(here.fd, file.tmp)
            self._failed(file, reason(err))
        file.done.set_result(result)

    def _failed(self, file: FileWrite, why: str) -> None:
        """A file not restored is an error of the result, and its bytes are not among those
        restored (they were counted as they were written, for progress)."""
        self.entries.error(file.spath, why)
        with self.entries.stats.lock:
            self.entries.stats.bytes_written -= file.counted
        file.counted = 0

    def _name_unnamed(self, fd: int, file: FileWrite) -> None:
        """Link a finished O_TMPFILE file into its directory: straight under its name in a directory
        this restore made (nothing is in the way), else under a temporary name renamed over it."""
        here = file.here
        assert here.fd is not None
        if here.fresh:
            link_unnamed(fd, here.fd, file.node.name)
            return
        tmp = self.entries.new_tmp()
        link_unnamed(fd, here.fd, tmp)
        file.tmp = tmp

    def _abandon_unfinished(self) -> None:
        """After an interruption: close and remove what was started, resolve every future."""
        for file in self.files:
            if file.done.done():
                continue
            if file.fd is not None:
                os.close(file.fd)
                file.fd = None
                if file.here.fd is not None and file.tmp:  # an unnamed file is gone with its descriptor
                    discard(file.here.fd, file.tmp)
            file.done.set_exception(EntryError("not restored: the restore was interrupted"))
