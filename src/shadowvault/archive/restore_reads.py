"""A content batch's pack ranges: read in this process or by the restore workers, each blob to every place.

What runs per blob and per place of a batch; its files and their steps (created on first use,
written, failed, finished after their last place) are the batch's own (`restore_content`; `Batch`
is what this needs of it). At most READS_AT_ONCE ranges of a batch are read at once, within the
restore's ReadBudget. A range read in this process is read once, each blob verified and written by
the thread that read it. A range the restore workers do (restore_workers.py) is cut into tasks: a
file that is one blob, new in a directory this restore made, is made whole by the worker; any
other is created here, passed along, and finished here after its last blob. What a worker could
not do (a blob that fails, a worker that died) is read here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Protocol

import blake3

from shadowvault.archive.pack_reads import PackedBlobs, PackRange, ReadBudget, WantedBlob, read_range
from shadowvault.archive.pool_waits import raise_interruption, wait_all, wait_any
from shadowvault.archive.restore_entries import EntryWriter, made_by_worker, reason
from shadowvault.archive.restore_plan import FileWrite, Place, Places, Target, TaskBuilder, name_bytes
from shadowvault.archive.restore_worker import NAME_BYTES_PER_TASK, PLACES_PER_TASK, Task, TaskBlob
from shadowvault.archive.restore_workers import RestoreWorkers, WorkerGone
from shadowvault.cancellation import check
from shadowvault.errors import JobCancelledError, ShadowvaultError

log = logging.getLogger(__name__)

NAME_MAX = 255  # bytes of a name on Linux filesystems
READS_AT_ONCE = 3  # pack ranges one batch reads at once (all batches together: the ReadBudget)


class Batch(Protocol):
    """What reading needs of a content batch (`ContentBatch`): the repository, what to verify, the
    budget and the workers, the record, and the steps of its files."""

    store: PackedBlobs
    entries: EntryWriter
    verify: bool
    budget: ReadBudget
    workers: RestoreWorkers | None

    def open(self, file: FileWrite) -> int | None: ...

    def put(self, place: Place, data: bytes, digest: bytes) -> int: ...

    def written(self, file: FileWrite, nbytes: int = 0) -> None: ...

    def fail(self, file: FileWrite, why: str) -> None: ...

    def finish(self, file: FileWrite) -> None: ...

    def made(self, file: FileWrite) -> None: ...


def read_all(batch: Batch, pool: Executor, ranges: list[PackRange], places: Places) -> None:
    """Read the ranges, READS_AT_ONCE at a time and each once there is room in the budget (none
    more once cancelled)."""
    futures: list[Future[None]] = []
    running: set[Future[None]] = set()
    cancellation = batch.entries.stats.cancellation
    try:
        for planned in ranges:
            if len(running) >= READS_AT_ONCE:
                running = wait_any(running)
            check(cancellation)
            path = batch.workers.pack_path(planned.pack) if batch.workers is not None else None
            room = batch.budget.acquire(planned.length) if path is None else 0
            try:
                if path is None:
                    fut = pool.submit(_read, batch, planned, places)
                else:
                    fut = pool.submit(_read_in_workers, batch, planned, places, path)
            except BaseException:
                batch.budget.release(room)
                raise
            fut.add_done_callback(_releaser(batch.budget, room))
            futures.append(fut)
            running.add(fut)
    finally:
        wait_all(futures)
    raise_interruption(futures)


def _releaser(budget: ReadBudget, room: int) -> Callable[[Future[None]], None]:
    """A done-callback that gives a read range's room back to the budget."""
    return lambda _task: budget.release(room)


def _read(batch: Batch, planned: PackRange, places: Places) -> None:
    """One range of a pack: each blob, verified, written to every place that needs it by this
    same thread (a file whose last place this was is finished here and now). One thread per
    range and no hand-over: Python threads pay for every switch, not for waiting. Cancelled, it
    stops before the next blob: the files it did not finish are the batch's to abandon."""
    delivered: set[bytes] = set()
    written = 0
    cancellation = batch.entries.stats.cancellation
    try:
        for blob, got in read_range(batch.store, planned):
            check(cancellation)
            delivered.add(blob.blob_id)
            targets = places[blob.blob_id][1]
            if isinstance(got, ShadowvaultError):
                for place in targets:
                    batch.fail(place.file, reason(got))
                    batch.written(place.file)
                continue
            digest = blake3.blake3(got).digest() if batch.verify else b""
            for place in targets:
                nbytes = batch.put(place, got, digest)
                written += nbytes
                batch.written(place.file, nbytes)
    except JobCancelledError:
        raise  # not a failure of the files: they are abandoned, not reported one by one
    except Exception as err:
        log.debug("reading %s failed", planned.pack, exc_info=True)
        for blob in planned.blobs:
            if blob.blob_id not in delivered:
                for place in places[blob.blob_id][1]:
                    batch.fail(place.file, reason(err))
                    batch.written(place.file)
    finally:
        with batch.entries.stats.lock:
            batch.entries.stats.bytes_written += written


def _read_in_workers(batch: Batch, planned: PackRange, places: Places, path: str) -> None:
    """One range of a pack, decoded and written by the worker processes (restore_workers.py).
    A file that is one blob, new in a directory this restore made, is made whole by the worker;
    any other is created here, passed along, and finished here after its last blob. What a
    worker could not do (a blob that fails, a worker that died) is done here. Cancelled, no
    further task is sent."""
    workers = batch.workers
    assert workers is not None
    cancellation = batch.entries.stats.cancellation
    for task, fds, targets in _tasks(batch, planned, places, path):
        check(cancellation)
        try:
            answer = workers.run(task, fds)
        except WorkerGone as err:
            log.debug("%s: its task is done in this process", err)
            _read_here(batch, planned.pack, task, targets)
            continue
        written = decoded = decoded_bytes = 0
        for target, done in zip(targets, answer, strict=True):
            location = target.blob.location
            if done.error:  # read again here: other copies, the damage recorded
                log.debug("a restore worker could not use %s: %s", location, done.error)
                end = location.offset + location.length
                _read(
                    batch,
                    PackRange(planned.pack, location.offset, end, [target.blob]),
                    {target.blob.blob_id: (location, target.everywhere)},
                )
                continue
            decoded += 1
            decoded_bytes += location.raw_length
            failed = dict(done.failed)
            for number, place in enumerate(target.passed):
                why = failed.get(number)
                nbytes = 0
                if why is None:
                    place.file.digests[place.index] = done.digest
                    nbytes = location.raw_length
                    written += nbytes
                else:
                    batch.fail(place.file, why)
                batch.written(place.file, nbytes)
            unmade = dict(done.unmade)
            for position, place in zip(target.task_blob.new_files, target.made, strict=True):
                why = unmade.get(position)
                if why is None:
                    written += location.raw_length
                    batch.made(place.file)
                else:
                    batch.fail(place.file, why)
                    batch.finish(place.file)
        workers.on_decoded(decoded, decoded_bytes)
        with batch.entries.stats.lock:
            batch.entries.stats.bytes_written += written


def _read_here(batch: Batch, pack: str, task: Task, targets: list[Target]) -> None:
    """A task no worker could do, done in this process (a blob in more files than a task passes
    descriptors for may be several targets of one task: each blob is read once here). A file
    the worker was to make that is under its name already was made before the worker ended:
    it is counted, not made again (and not reported as "File exists")."""
    wanted: Places = {}
    blobs: list[WantedBlob] = []
    for target in targets:
        places = list(target.passed)
        for place in target.made:
            if made_by_worker(place.file.here, place.file.node.name):
                batch.made(place.file)
            else:
                places.append(place)
        known = wanted.get(target.blob.blob_id)
        if known is None:
            wanted[target.blob.blob_id] = (target.blob.location, places)
            blobs.append(target.blob)
        else:
            known[1].extend(places)
    _read(batch, PackRange(pack, task.offset, task.offset + task.length, blobs), wanted)


def _tasks(
    batch: Batch, planned: PackRange, places: Places, path: str
) -> Iterator[tuple[Task, list[int], list[Target]]]:
    """The range cut into worker tasks of at most `fds_per_task` descriptors and PLACES_PER_TASK
    places (a blob needed in more files than that is split over several tasks). A file the
    worker makes whole costs its directory's descriptor, once per task; any other file is
    created here as it first appears (one that cannot be created fails its places at once)."""
    assert batch.workers is not None
    most = batch.workers.fds_per_task
    task = TaskBuilder()
    for blob in planned.blobs:
        everywhere = places[blob.blob_id][1]
        for at in range(0, len(everywhere), most):
            part = everywhere[at : at + most]
            modes = [_made_by_worker(batch, place) for place in part]
            crowded = (
                len(task.fds) + task.descriptors_for(part, modes) > most
                or task.count + len(part) > PLACES_PER_TASK
                or task.name_bytes + name_bytes(part, modes) > NAME_BYTES_PER_TASK
            )
            if task.blobs and crowded:
                yield task.build(path, batch.verify)
                task = TaskBuilder()
            passed: list[Place] = []
            made: list[Place] = []
            where: list[tuple[int, int, bool]] = []
            new_files: list[int] = []
            for place, mode in zip(part, modes, strict=True):
                if mode is not None:
                    new_files.append(task.new_file(place.file, mode))
                    made.append(place)
                    continue
                position = task.positions.get(place.file)
                if position is None:
                    fd = batch.open(place.file)
                    if fd is None:  # could not be created: its failure is recorded
                        batch.written(place.file)
                        continue
                    position = task.positions[place.file] = len(task.fds)
                    task.fds.append(fd)
                passed.append(place)
                where.append((position, place.offset, place.file.node.sparse))
            if not passed and not made:
                continue
            task_blob = TaskBlob.at(blob.blob_id, blob.location, where, new_files)
            task.blobs.append(Target(blob, passed, made, task_blob))
            task.count += len(part)
    if task.blobs:
        yield task.build(path, batch.verify)


def _made_by_worker(batch: Batch, place: Place) -> int | None:
    """The mode to create the file with when a worker can make it whole (it is this one blob,
    new in a directory this restore made, with nothing to set but times); else None."""
    file = place.file
    if not (
        file.here.fresh
        and batch.entries.tmpfile
        and not file.shared
        and not file.zero_runs
        and not file.node.sparse
        and file.fd is None
        and file.failure is None
        and len(file.lengths) == 1
        and len(file.node.name) <= NAME_MAX  # a longer one fails here, not in a task's datagram
    ):
        return None
    mode, complete = batch.entries.create_mode(file.node, file.here)
    return mode if complete else None
