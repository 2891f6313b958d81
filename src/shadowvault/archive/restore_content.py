"""File content for a restore: files are written in batches, each pack they need read once.

A batch is up to a thousand files. Its plan groups the blobs its files need by pack, each blob
once however many files (or places in one file) need it; each pack is then read in one ranged read
covering its needed blobs (`pack_reads` states when a pack takes more than one), by at most
READS_AT_ONCE readers per batch; every blob is decrypted and verified once and written, by the
thread that read it (no hand-over: Python threads pay for every switch), to every place that needs
it. A file is created (unnamed with O_TMPFILE, else under a temporary name; opened once, with its
own mode and owner when that is all its metadata but times: `EntryWriter.create_mode`) when its
first blob arrives, and as soon as its last blob is written it gets its metadata, is read back
when `verify` asks, and is linked or renamed to its name, by the thread that wrote that blob:
nothing is ever half-written under its final name, and a file of one blob holds a descriptor only
while it is written. (An unnamed file costs one directory update where a temporary name costs
three: 21 against 30-43 us a file on ext4.) With restore worker processes (restore_workers.py),
a file of one blob, new in a directory this restore made, is made whole by the worker that
decodes its blob. A batch is cut when it holds BATCH_FILES files, BATCH_BYTES of content, or
BATCH_SPANNING files of several blobs (those may hold a descriptor from their first blob to
their last), so descriptors stay bounded; a pack needed by two batches is read by each.

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

import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Executor, Future
from dataclasses import dataclass, field

import blake3

from shadowvault.archive.blob_writes import allocate_zero_runs, verify_file, write_at
from shadowvault.archive.pack_reads import (
    MAX_GAP,
    MAX_SPAN,
    PackedBlobs,
    PackRange,
    ReadBudget,
    WantedBlob,
    plan_ranges,
    read_range,
)
from shadowvault.archive.pool_waits import each, raise_interruption, wait_all, wait_any
from shadowvault.archive.restore_entries import (
    EntryError,
    EntryWriter,
    Outcome,
    Pending,
    Restored,
    TargetDir,
    create_file,
    discard,
    made_by_worker,
    reason,
)
from shadowvault.archive.restore_workers import (
    NAME_BYTES_PER_TASK,
    PLACES_PER_TASK,
    NewFile,
    RestoreWorkers,
    Task,
    TaskBlob,
    WorkerGone,
)
from shadowvault.archive.unnamed_files import link_unnamed
from shadowvault.errors import ShadowvaultError
from shadowvault.repo.index import BlobLocation
from shadowvault.repo.tree import Node

log = logging.getLogger(__name__)

BATCH_FILES = 1024  # files one batch plans (a file of one blob holds a descriptor only while written)
BATCH_BYTES = 1 << 30  # content one batch plans (a larger file is a batch of its own)
BATCH_SPANNING = 256  # files of several blobs one batch plans: each may hold a descriptor throughout
NAME_MAX = 255  # bytes of a name on Linux filesystems
FILES_PER_TASK = 8  # files a worker checks or finishes in one task
READS_AT_ONCE = 3  # pack ranges one batch reads at once (all batches together: the ReadBudget)


@dataclass(eq=False)
class FileWrite:
    """One file being restored: where it is written, what of it is known, what went wrong."""

    node: Node
    spath: bytes
    here: TargetDir
    done: Outcome
    zeros: list[int | None]  # per blob of node.content: the length of a run of zeros, else None
    tmp: bytes = b""
    fd: int | None = None
    complete: bool = False  # created with all its metadata but times (EntryWriter.create_mode)
    size: int = 0
    lengths: list[int] = field(default_factory=list)  # per blob of node.content
    # per blob, of what was written (verify only); None for a run of zeros (never read nor written)
    digests: list[bytes | None] = field(default_factory=list)
    zero_runs: list[tuple[int, int]] = field(default_factory=list)  # (offset, length), adjacent merged
    failure: str | None = None
    unwritten: int = 0  # places of its blobs not written (or failed) yet: it is finished at 0
    shared: bool = False  # more than one place: written by several threads, which take `opening`
    opening: threading.Lock = field(default_factory=threading.Lock)  # its first two blobs may race


@dataclass(frozen=True)
class _Place:
    """Where one blob goes: a file, the offset in it, the blob's position in the file's content."""

    file: FileWrite
    offset: int
    index: int


def _add_zero_run(file: FileWrite, offset: int, length: int) -> None:
    runs = file.zero_runs
    if runs and runs[-1][0] + runs[-1][1] == offset:
        runs[-1] = (runs[-1][0], runs[-1][1] + length)
    else:
        runs.append((offset, length))


def _groups(files: list[FileWrite]) -> list[list[FileWrite]]:
    return [files[at : at + FILES_PER_TASK] for at in range(0, len(files), FILES_PER_TASK)]


@dataclass(eq=False)
class _Target:
    """One blob of a worker task: the places it is written to through passed descriptors, and
    the files the worker makes whole of it."""

    blob: WantedBlob
    passed: list[_Place]  # in the order of task_blob.places
    made: list[_Place]  # in the order of task_blob.new_files
    task_blob: TaskBlob

    @property
    def everywhere(self) -> list[_Place]:
        """Its places in this task: what is done here when the worker could not."""
        return self.passed + self.made


def _name_bytes(part: list[_Place], modes: list[int | None]) -> int:
    """Bytes of the names of the places' files that a worker would make (mode not None)."""
    return sum(len(place.file.node.name) for place, mode in zip(part, modes, strict=True) if mode is not None)


@dataclass(eq=False)
class _TaskBuilder:
    """A worker task being put together: its blobs, the descriptors it passes, its new files."""

    blobs: list[_Target] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    positions: dict[FileWrite, int] = field(default_factory=dict)  # a file's descriptor's position
    directories: dict[int, int] = field(default_factory=dict)  # a directory descriptor's position
    new_files: list[NewFile] = field(default_factory=list)
    count: int = 0  # places
    name_bytes: int = 0  # of the new files' names: what makes a task's message long

    def descriptors_for(self, part: list[_Place], modes: list[int | None]) -> int:
        """How many descriptors the task would pass anew for these places: a new file's directory
        once, any other file once (a file whose creation fails is counted all the same)."""
        needed: set[FileWrite | int | None] = set()
        for place, mode in zip(part, modes, strict=True):
            if mode is None:
                if place.file not in self.positions:
                    needed.add(place.file)
            elif place.file.here.fd not in self.directories:
                needed.add(place.file.here.fd)
        return len(needed)

    def new_file(self, file: FileWrite, mode: int) -> int:
        """Add a file the worker makes whole; its position among the task's new files."""
        here_fd = file.here.fd
        assert here_fd is not None
        directory = self.directories.get(here_fd)
        if directory is None:
            directory = self.directories[here_fd] = len(self.fds)
            self.fds.append(here_fd)
        node = file.node
        self.new_files.append(NewFile(directory, node.name, mode, node.atime_ns, node.mtime_ns))
        self.name_bytes += len(node.name)
        return len(self.new_files) - 1

    def build(self, path: str, digests: bool) -> tuple[Task, list[int], list[_Target]]:
        blobs = [target.task_blob for target in self.blobs]
        return Task.spanning(path, digests, blobs, self.new_files), self.fds, self.blobs


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
            # in a directory this restore made nothing is in the way: checked here, no system call
            self._check_all([f for f in self.files if f.here.fresh])
            each(pool, self._check_all, _groups([f for f in self.files if not f.here.fresh]))
            live = [f for f in self.files if not f.done.done()]
            places, alone = self._plan(live)
            self._pool = pool
            self._finish_later([f for f in live if f.unwritten == 0 and f not in alone])  # no data
            wanted = (WantedBlob(blob_id, location) for blob_id, (location, _) in places.items())
            # a worker reads what it needs of a range itself, skipping the gaps
            ranges = plan_ranges(wanted, max_gap=MAX_SPAN if self.workers is not None else MAX_GAP)
            self._read_all(pool, ranges, places)
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

    # -- the steps (worker threads) ----------------------------------------------------------------

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

    def _open(self, file: FileWrite) -> int | None:
        """The file's descriptor, created under a temporary name on first use (None once it failed)."""
        if not file.shared:  # one place: only the thread writing it gets here
            return self._create(file)
        with file.opening:
            return self._create(file)

    def _create(self, file: FileWrite) -> int | None:
        """An unnamed file in its directory (O_TMPFILE: named by `_finish`, gone if the restore
        stops first), or where the filesystem has none, one under a temporary name."""
        here_fd = file.here.fd
        assert here_fd is not None
        if file.fd is None and file.failure is None:
            try:
                entries = self.entries
                mode, file.complete = entries.create_mode(file.node, file.here)
                file.fd, file.tmp = create_file(here_fd, mode, entries.new_tmp, unnamed=entries.tmpfile)
            except OSError as err:
                self._fail(file, reason(err))
        return file.fd

    def _plan(
        self, files: list[FileWrite]
    ) -> tuple[dict[bytes, tuple[BlobLocation, list[_Place]]], list[FileWrite]]:
        """Where each needed blob goes; the files with a blob the index does not place are read
        blob by blob (`load_blob` reloads the index, or says what is missing)."""
        places: dict[bytes, tuple[BlobLocation, list[_Place]]] = {}
        alone: list[FileWrite] = []
        lookup = self.store.lookup
        for file in files:
            zeros = file.zeros
            located = [
                None if size is not None else lookup(blob_id)
                for blob_id, size in zip(file.node.content, zeros, strict=True)
            ]
            if any(location is None and size is None for location, size in zip(located, zeros, strict=True)):
                alone.append(file)
                continue
            offset = 0
            for index, (blob_id, location, size) in enumerate(
                zip(file.node.content, located, zeros, strict=True)
            ):
                if size is not None:  # a run of zeros: nothing to read or write
                    _add_zero_run(file, offset, size)
                    file.lengths.append(size)
                    file.digests.append(None)
                    offset += size
                    continue
                assert location is not None
                places.setdefault(blob_id, (location, []))[1].append(_Place(file, offset, index))
                offset += location.raw_length
                file.lengths.append(location.raw_length)
                file.digests.append(b"")
                file.unwritten += 1
            file.size = offset
            file.shared = file.unwritten > 1
        return places, alone

    def _read_all(
        self, pool: Executor, ranges: list[PackRange], places: dict[bytes, tuple[BlobLocation, list[_Place]]]
    ) -> None:
        """Read the ranges, READS_AT_ONCE at a time and each once there is room in the budget."""
        futures: list[Future[None]] = []
        running: set[Future[None]] = set()
        try:
            for planned in ranges:
                if len(running) >= READS_AT_ONCE:
                    running = wait_any(running)
                path = self.workers.pack_path(planned.pack) if self.workers is not None else None
                room = self.budget.acquire(planned.length) if path is None else 0
                try:
                    if path is None:
                        fut = pool.submit(self._read, planned, places)
                    else:
                        fut = pool.submit(self._read_in_workers, planned, places, path)
                except BaseException:
                    self.budget.release(room)
                    raise
                fut.add_done_callback(self._releaser(room))
                futures.append(fut)
                running.add(fut)
        finally:
            wait_all(futures)
        raise_interruption(futures)

    def _releaser(self, room: int) -> Callable[[Future[None]], None]:
        """A done-callback that gives a read range's room back to the budget."""
        return lambda _task: self.budget.release(room)

    def _read(self, planned: PackRange, places: dict[bytes, tuple[BlobLocation, list[_Place]]]) -> None:
        """One range of a pack: each blob, verified, written to every place that needs it by this
        same thread (a file whose last place this was is finished here and now). One thread per
        range and no hand-over: Python threads pay for every switch, not for waiting."""
        delivered: set[bytes] = set()
        written = 0
        try:
            for blob, got in read_range(self.store, planned):
                delivered.add(blob.blob_id)
                targets = places[blob.blob_id][1]
                if isinstance(got, ShadowvaultError):
                    for place in targets:
                        self._fail(place.file, reason(got))
                        self._written(place.file)
                    continue
                digest = blake3.blake3(got).digest() if self.verify else b""
                for place in targets:
                    written += self._put(place, got, digest)
                    self._written(place.file)
        except Exception as err:
            log.debug("reading %s failed", planned.pack, exc_info=True)
            for blob in planned.blobs:
                if blob.blob_id not in delivered:
                    for place in places[blob.blob_id][1]:
                        self._fail(place.file, reason(err))
                        self._written(place.file)
        finally:
            with self.entries.stats.lock:
                self.entries.stats.bytes_written += written

    def _read_in_workers(
        self, planned: PackRange, places: dict[bytes, tuple[BlobLocation, list[_Place]]], path: str
    ) -> None:
        """One range of a pack, decoded and written by the worker processes (restore_workers.py).
        A file that is one blob, new in a directory this restore made, is made whole by the worker;
        any other is created here, passed along, and finished here after its last blob. What a
        worker could not do (a blob that fails, a worker that died) is done here."""
        workers = self.workers
        assert workers is not None
        for task, fds, targets in self._tasks(planned, places, path):
            try:
                answer = workers.run(task, fds)
            except WorkerGone as err:
                log.debug("%s: its task is done in this process", err)
                self._read_here(planned.pack, task, targets)
                continue
            written = decoded = decoded_bytes = 0
            for target, done in zip(targets, answer, strict=True):
                location = target.blob.location
                if done.error:  # read again here: other copies, the damage recorded
                    log.debug("a restore worker could not use %s: %s", location, done.error)
                    end = location.offset + location.length
                    self._read(
                        PackRange(planned.pack, location.offset, end, [target.blob]),
                        {target.blob.blob_id: (location, target.everywhere)},
                    )
                    continue
                decoded += 1
                decoded_bytes += location.raw_length
                failed = dict(done.failed)
                for number, place in enumerate(target.passed):
                    why = failed.get(number)
                    if why is None:
                        place.file.digests[place.index] = done.digest
                        written += location.raw_length
                    else:
                        self._fail(place.file, why)
                    self._written(place.file)
                unmade = dict(done.unmade)
                for position, place in zip(target.task_blob.new_files, target.made, strict=True):
                    why = unmade.get(position)
                    if why is None:
                        written += location.raw_length
                        self._made(place.file)
                    else:
                        self._fail(place.file, why)
                        self._finish(place.file)
            workers.on_decoded(decoded, decoded_bytes)
            with self.entries.stats.lock:
                self.entries.stats.bytes_written += written

    def _read_here(self, pack: str, task: Task, targets: list[_Target]) -> None:
        """A task no worker could do, done in this process (a blob in more files than a task passes
        descriptors for may be several targets of one task: each blob is read once here). A file
        the worker was to make that is under its name already was made before the worker ended:
        it is counted, not made again (and not reported as "File exists")."""
        wanted: dict[bytes, tuple[BlobLocation, list[_Place]]] = {}
        blobs: list[WantedBlob] = []
        for target in targets:
            places = list(target.passed)
            for place in target.made:
                if made_by_worker(place.file.here, place.file.node.name):
                    self._made(place.file)
                else:
                    places.append(place)
            known = wanted.get(target.blob.blob_id)
            if known is None:
                wanted[target.blob.blob_id] = (target.blob.location, places)
                blobs.append(target.blob)
            else:
                known[1].extend(places)
        self._read(PackRange(pack, task.offset, task.offset + task.length, blobs), wanted)

    def _tasks(
        self, planned: PackRange, places: dict[bytes, tuple[BlobLocation, list[_Place]]], path: str
    ) -> Iterator[tuple[Task, list[int], list[_Target]]]:
        """The range cut into worker tasks of at most `fds_per_task` descriptors and PLACES_PER_TASK
        places (a blob needed in more files than that is split over several tasks). A file the
        worker makes whole costs its directory's descriptor, once per task; any other file is
        created here as it first appears (one that cannot be created fails its places at once)."""
        assert self.workers is not None
        most = self.workers.fds_per_task
        task = _TaskBuilder()
        for blob in planned.blobs:
            everywhere = places[blob.blob_id][1]
            for at in range(0, len(everywhere), most):
                part = everywhere[at : at + most]
                modes = [self._made_by_worker(place) for place in part]
                crowded = (
                    len(task.fds) + task.descriptors_for(part, modes) > most
                    or task.count + len(part) > PLACES_PER_TASK
                    or task.name_bytes + _name_bytes(part, modes) > NAME_BYTES_PER_TASK
                )
                if task.blobs and crowded:
                    yield task.build(path, self.verify)
                    task = _TaskBuilder()
                passed: list[_Place] = []
                made: list[_Place] = []
                where: list[tuple[int, int, bool]] = []
                new_files: list[int] = []
                for place, mode in zip(part, modes, strict=True):
                    if mode is not None:
                        new_files.append(task.new_file(place.file, mode))
                        made.append(place)
                        continue
                    position = task.positions.get(place.file)
                    if position is None:
                        fd = self._open(place.file)
                        if fd is None:  # could not be created: its failure is recorded
                            self._written(place.file)
                            continue
                        position = task.positions[place.file] = len(task.fds)
                        task.fds.append(fd)
                    passed.append(place)
                    where.append((position, place.offset, place.file.node.sparse))
                if not passed and not made:
                    continue
                task_blob = TaskBlob.at(blob.blob_id, blob.location, where, new_files)
                task.blobs.append(_Target(blob, passed, made, task_blob))
                task.count += len(part)
        if task.blobs:
            yield task.build(path, self.verify)

    def _made_by_worker(self, place: _Place) -> int | None:
        """The mode to create the file with when a worker can make it whole (it is this one blob,
        new in a directory this restore made, with nothing to set but times); else None."""
        file = place.file
        if not (
            file.here.fresh
            and self.entries.tmpfile
            and not file.shared
            and not file.zero_runs
            and not file.node.sparse
            and file.fd is None
            and file.failure is None
            and len(file.lengths) == 1
            and len(file.node.name) <= NAME_MAX  # a longer one fails here, not in a task's datagram
        ):
            return None
        mode, complete = self.entries.create_mode(file.node, file.here)
        return mode if complete else None

    def _made(self, file: FileWrite) -> None:
        """A file a worker made whole is under its name: count it and resolve its outcome."""
        if self.verify:
            with self.entries.stats.lock:
                self.entries.stats.verified += 1
        file.done.set_result(self.entries.restored(file.node, file.here))

    def _written(self, file: FileWrite) -> None:
        """One place of the file is written (or failed); after the last one the file is finished."""
        if not file.shared:  # its only place
            file.unwritten = 0
            self._finish(file)
            return
        with self._lock:
            file.unwritten -= 1
            last = file.unwritten == 0
        if last:
            self._finish(file)

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
            self._open(file)
            self._finish(file)

    def _put(self, place: _Place, data: bytes, digest: bytes) -> int:
        """Write one blob to one place; the bytes written (counted by the caller)."""
        file = place.file
        if file.failure is not None:
            return 0
        fd = self._open(file)
        if fd is None:
            return 0
        try:
            write_at(fd, data, place.offset, sparse=file.node.sparse)
        except OSError as err:
            self._fail(file, reason(err))
            return 0
        file.digests[place.index] = digest
        return len(data)

    def _write_alone_and_finish(self, file: FileWrite) -> None:
        if self._open(file) is not None:
            self._write_alone(file)
        self._finish(file)

    def _write_alone(self, file: FileWrite) -> None:
        """Every blob of the file through `load_blob`, in order."""
        assert file.fd is not None
        offset = 0
        file.lengths, file.digests, file.zero_runs = [], [], []
        zero_blobs = self.store.zero_blobs
        try:
            for blob_id in file.node.content:
                zeros = zero_blobs.size_of(blob_id)
                if zeros is not None:  # a run of zeros: nothing to read or write
                    _add_zero_run(file, offset, zeros)
                    file.lengths.append(zeros)
                    file.digests.append(None)
                    offset += zeros
                    continue
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
        assert here.fd is not None
        result: Restored = None
        if fd is None:  # failed before it was created: nothing on disk
            self.entries.error(file.spath, file.failure or "not restored")
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
        except Exception as err:
            if file.tmp:
                discard(here.fd, file.tmp)
            self.entries.error(file.spath, reason(err))
        file.done.set_result(result)

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
