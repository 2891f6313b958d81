"""Pack ranges decoded and written in worker processes: the second core for a restore.

A restore spends most of its time on short calls per blob (read the pack range, decrypt,
decompress, check the blob's id, write it to every file that needs it); in threads of one process
they queue for the GIL, so a restore ran on about one core. Worker processes have GILs of their
own. The restore's process keeps what is its state: the walk, the plan, what was restored.

Most files of a tree are one blob each, and creating, timing and naming them cost the restore's
process as much as decoding cost the workers, so a worker makes such a file whole when that is
all there is to it (new in a directory this restore made, its mode and owner as created, no
xattrs: `NewFile`): unnamed (O_TMPFILE) in the directory's descriptor, written, given its times,
read back for --verify, and linked under its name; on failure nothing is left. Any other file the
restore's process creates (unnamed) and finishes (metadata, the read-back, its name); the worker
writes its blobs into it. Files and directories go to the worker as descriptors (SCM_RIGHTS over
a Unix socket pair): a worker never resolves a path of the target, only a new file's one name in
a directory the restore made. The repository must be a local directory (a worker reads the pack
file itself, READ_WINDOW at a time, skipping gaps of READ_GAP or more, so a task may be a whole
pack); remote storage keeps its reader threads. A worker holds TASKS_QUEUED tasks: the next one
waits in its socket while the restore's process reads the last answer and builds the task after,
so the worker does not wait on the restore's process (2 GiB / 100k files on 2 CPUs, cold: 9.8-16.9 s
with one task per worker and a task per run of nearby blobs, 8.6-14.7 s now, in interleaved runs).

A worker answers per blob: its digest (for --verify), the places it could not write and the new
files it could not make. A blob it could not read, or that failed verification, is read again by
the restore's process, which knows the other copies and records the damage; a worker that dies
fails nothing either: its task is done again in the restore's process, and that worker is not
used again.

Each worker is `python -m shadowvault.archive.restore_workers FD`, FD its end of the socket pair
(SOCK_SEQPACKET: one message per send); the first message holds the repository's keys, in memory
only, as in the restore's own process. SIGINT is the restore's to handle: a worker ignores it and
ends when its socket closes. (Not multiprocessing: its children re-import the parent's main
script, which a program embedding Shadowvault need not guard.)
"""

from __future__ import annotations

import itertools
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

import blake3
import msgspec

from shadowvault.archive.blob_writes import read_at, verify_file, write_at
from shadowvault.archive.restore_entries import (
    TMP_PREFIX,
    EntryError,
    create_file,
    discard,
    reason,
)
from shadowvault.archive.unnamed_files import link_unnamed
from shadowvault.archive.worker_pool import Turns, WorkerPool, end
from shadowvault.errors import IntegrityError, UsageError
from shadowvault.fsutil import open_regular
from shadowvault.repo.index import BlobLocation
from shadowvault.repo.pack import open_blob
from shadowvault.repo.sealing import MasterKey, Sealer
from shadowvault.typed_decoding import decode_msgpack

log = logging.getLogger(__name__)

PROCESSES_ENV = "SHADOWVAULT_RESTORE_PROCESSES"
WORTH_FILES = 64  # a batch of fewer files (and bytes) than these is restored without workers
WORTH_BYTES = 8 << 20
MAX_MESSAGE = 1 << 20  # a task or its answer (tens of KiB: a task has at most PLACES_PER_TASK places)
FDS_PER_TASK = 128  # descriptors passed with one task (the kernel takes at most 253 per message)
MIN_FDS_PER_TASK = 16  # under a descriptor limit that leaves less, a restore does without workers
PLACES_PER_TASK = 1024  # places (a file and an offset in it) one task writes
# names of the new files of one task: a task is one datagram, which must fit the socket's send
# buffer (net.core.wmem_default, ~208 KiB), and 1024 names may be 255 bytes each
NAME_BYTES_PER_TASK = 64 << 10
TASKS_QUEUED = 2  # tasks a worker holds: the next waits in its socket while its last answer is read
READ_WINDOW = 4 << 20  # what a worker reads of a pack at once (a larger blob is read alone)
# unneeded bytes between two blobs worth reading through rather than skipping: a read costs a few
# microseconds, copying 64 KiB about as much (2 GiB / 100k files, cold: 1 MiB read 1.9 GB for 1.4 GB
# of blobs, 64 KiB 1.43 GB, and took ~0.4 s less system time)
READ_GAP = 64 << 10


class WorkerGone(Exception):
    """A restore worker ended or stopped answering: the task is done in the restore's process."""


class _Start(NamedTuple):
    encrypt: bytes
    id_key: bytes


class TaskBlob(NamedTuple):
    """One blob of a task and where it goes."""

    blob_id: bytes
    kind: int
    offset: int  # in the pack file
    length: int  # sealed
    raw_length: int
    compressed: bool
    places: list[tuple[int, int, bool]]  # (descriptor's position in the task, offset in the file, sparse)
    new_files: list[int]  # the task's new files that are this blob and nothing else (their positions)

    @classmethod
    def at(
        cls,
        blob_id: bytes,
        location: BlobLocation,
        places: list[tuple[int, int, bool]],
        new_files: list[int],
    ) -> TaskBlob:
        """The blob where the index places it."""
        return cls(
            blob_id,
            int(location.type),
            location.offset,
            location.length,
            location.raw_length,
            location.compressed,
            places,
            new_files,
        )


class NewFile(NamedTuple):
    """A file the worker makes whole from one blob: created unnamed in its directory (with its final
    mode, which is all its metadata but times: EntryWriter.create_mode), written, given its times,
    read back when the restore verifies, and linked under its name in a directory this restore made."""

    directory: int  # its directory's descriptor's position in the task
    name: bytes
    mode: int
    atime_ns: int
    mtime_ns: int


class Task(NamedTuple):
    """A range of one pack file: read once, each blob decoded once and written to its places."""

    path: str
    offset: int
    length: int
    digests: bool  # answer each blob's BLAKE3 digest (the restore verifies what it wrote)
    blobs: list[TaskBlob]
    new_files: list[NewFile]

    @classmethod
    def spanning(cls, path: str, digests: bool, blobs: list[TaskBlob], new_files: list[NewFile]) -> Task:
        """The task whose range is the one its blobs span."""
        start = min(blob.offset for blob in blobs)
        end = max(blob.offset + blob.length for blob in blobs)
        return cls(path, start, end - start, digests, blobs, new_files)


class BlobDone(NamedTuple):
    """What became of one blob of a task."""

    error: str = ""  # it could not be read or verified: nothing of it was written
    digest: bytes = b""
    failed: list[tuple[int, str]] = []  # (place's position, why); decoded, never mutated
    unmade: list[tuple[int, str]] = []  # (new file's position in the task, why): nothing of it is left


_encoder = msgspec.msgpack.Encoder()


def _windows(blobs: list[TaskBlob]) -> Iterator[tuple[int, int, list[TaskBlob]]]:
    """The blobs (in pack order) in runs read at once: (start, end, blobs), each spanning at most
    READ_WINDOW unless it is one larger blob. A worker holds one window, not the task's range."""
    run: list[TaskBlob] = []
    start = end = 0
    for blob in blobs:
        if run and (
            max(end, blob.offset + blob.length) - min(start, blob.offset) > READ_WINDOW
            or blob.offset - end > READ_GAP
        ):
            yield start, end, run
            run = []
        if not run:
            start = end = blob.offset
        run.append(blob)
        start, end = min(start, blob.offset), max(end, blob.offset + blob.length)
    if run:
        yield start, end, run


def _unreadable(task: Task, err: OSError, blobs: int) -> list[BlobDone]:
    return [BlobDone(error=f"cannot read {task.path}: {err.strerror or err}")] * blobs


def run_task(sealer: Sealer, task: Task, fds: list[int]) -> list[BlobDone]:
    """Do one task (in a worker): a short or unreadable range fails only the blobs it cuts off."""
    try:
        pack = open_regular(task.path)  # never a FIFO planted in the repository: that open would block
    except OSError as err:
        return _unreadable(task, err, len(task.blobs))
    done: list[BlobDone] = []
    try:
        for start, end, blobs in _windows(task.blobs):
            try:
                raw = memoryview(read_at(pack, end - start, start))
            except OSError as err:
                done.extend(_unreadable(task, err, len(blobs)))
                continue
            for blob in blobs:
                at = blob.offset - start
                done.append(_write_blob(sealer, task, blob, raw[at : at + blob.length], fds))
    finally:
        os.close(pack)
    return done


def _write_blob(sealer: Sealer, task: Task, blob: TaskBlob, sealed: memoryview, fds: list[int]) -> BlobDone:
    """Decode one blob and write it to its places and new files."""
    try:
        data = open_blob(
            sealer,
            blob.blob_id,
            blob.kind,
            sealed,
            length=blob.length,
            raw_length=blob.raw_length,
            compressed=blob.compressed,
            what=f"blob {blob.blob_id.hex()[:16]} in {os.path.basename(task.path)[:16]}",
        )
    except IntegrityError as err:
        return BlobDone(error=str(err))
    failed: list[tuple[int, str]] = []
    for number, (position, offset, sparse) in enumerate(blob.places):
        try:
            write_at(fds[position], data, offset, sparse=sparse)
        except OSError as err:
            failed.append((number, err.strerror or str(err)))
    digest = blake3.blake3(data).digest() if task.digests else b""
    unmade: list[tuple[int, str]] = []
    for position in blob.new_files:
        new = task.new_files[position]
        try:
            make_file(fds[new.directory], new, data, digest)
        except (OSError, EntryError) as err:
            unmade.append((position, reason(err)))
    return BlobDone(digest=digest, failed=failed, unmade=unmade)


_tmp_names = itertools.count()


def _new_tmp() -> bytes:
    """A temporary name no other process of this restore uses (`EntryWriter.new_tmp`'s form)."""
    return TMP_PREFIX + b"%d-w%d" % (os.getpid(), next(_tmp_names))


def make_file(directory: int, new: NewFile, data: bytes | memoryview, digest: bytes) -> None:
    """Make a whole new file of `data` (read back against `digest` when the restore verifies), or
    leave nothing: an unnamed file vanishes with its descriptor; where the filesystem has none, the
    file is written under a temporary name and renamed."""
    fd, tmp = create_file(directory, new.mode, _new_tmp)
    try:
        try:
            write_at(fd, data, 0, sparse=False)
            os.utime(fd, ns=(new.atime_ns, new.mtime_ns))
            if digest:
                verify_file(fd, [len(data)], [digest])
            if not tmp:
                link_unnamed(fd, directory, new.name)
        finally:
            os.close(fd)
        if tmp:
            os.rename(tmp, new.name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        if tmp:
            discard(directory, tmp)
        raise


def serve(sock: socket.socket) -> None:
    """A worker's loop: the start message, then one answer per task, until the socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    first = sock.recv(MAX_MESSAGE)
    if not first:
        return
    start = decode_msgpack(first, _Start)
    sealer = Sealer(MasterKey(start.encrypt, start.id_key))
    tasks = msgspec.msgpack.Decoder(Task)
    while True:
        body, fds, _flags, _address = socket.recv_fds(sock, MAX_MESSAGE, FDS_PER_TASK)
        if not body:
            return
        try:
            answer = run_task(sealer, tasks.decode(body), fds)
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(_encoder.encode(answer))


class _Worker:
    """One worker process, used by up to TASKS_QUEUED threads at a time: their tasks are sent one
    after another and answered in the order sent, each thread taking its own answer."""

    def __init__(self, start: _Start) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # stderr to /dev/null: a worker's last words must not land among a --json run's lines
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
            )
        except BaseException:
            self.sock.close()
            raise
        finally:
            theirs.close()
        self.alive = True
        self._answers = msgspec.msgpack.Decoder(list[BlobDone])
        self._turns = Turns()
        self.sock.send(_encoder.encode(start))

    def run(self, task: Task, fds: list[int]) -> list[BlobDone]:
        if not self.alive:
            raise WorkerGone(f"restore worker {self.process.pid} ended")
        message = _encoder.encode(task)

        def send() -> None:
            try:
                socket.send_fds(self.sock, [message], fds)
            except OSError:
                end(self)

        answer = self._turns.exchange(send, lambda: self._answer(len(task.blobs)))
        if answer is None:
            raise WorkerGone(f"restore worker {self.process.pid} ended (exit status {self.process.poll()})")
        return answer

    def _answer(self, blobs: int) -> list[BlobDone] | None:
        """The next answer, or None once the worker is gone; a worker whose answer makes no sense
        is ended before any task of it is done again elsewhere (it makes nothing after)."""
        if not self.alive:
            return None
        try:
            body = self.sock.recv(MAX_MESSAGE)
            answer = self._answers.decode(body) if body else None
        except (OSError, msgspec.DecodeError):
            answer = None
        if answer is None or len(answer) != blobs:
            end(self)
            return None
        return answer

    def stop(self) -> None:
        """Close its socket (it exits) and reap it; kill it if it does not go."""
        self.sock.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def descriptors_per_task(tasks: int) -> int:
    """Files one task may hold open, within this process's descriptor limit: the files of a task
    are created before it is sent, and `tasks` are held at once (sent, or being put together),
    besides the directory descriptors and files the restore holds anyway (a quarter of what is
    free is left to them)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return FDS_PER_TASK
    try:
        free = soft - len(os.listdir("/proc/self/fd"))
    except OSError:
        free = soft // 2
    return max(0, min(FDS_PER_TASK, free * 3 // 4 // max(1, tasks) // 2))


def default_processes() -> int:
    """$SHADOWVAULT_RESTORE_PROCESSES, else two on two or three CPUs, one per CPU but the one the
    restore's own process uses beyond that (at most 3), none on one CPU.

    Measured on 2 CPUs (2 GiB / 100k files, cold, summed RSS of the processes): no workers 18-19 s
    and 94-100 MiB, two workers 12.4-15.1 s and 155-157 MiB (restic 0.14: ~14.6 s, ~226 MiB). The
    restore's process mostly waits on them since they make the files of one blob themselves; a
    third worker on 2 CPUs gained less than the run-to-run noise."""
    text = os.environ.get(PROCESSES_ENV, "")
    if text:
        try:
            return max(0, int(text))
        except ValueError:
            raise UsageError(f"{PROCESSES_ENV} must be a number of processes, not {text!r}") from None
    cpus = os.cpu_count() or 1
    return 0 if cpus < 2 else min(3, max(2, cpus - 1))


class WorkerSource(Protocol):
    """What restore workers need of a repository on local storage."""

    def sealing_keys(self) -> MasterKey | None: ...

    def local_pack_path(self, pack_id: str) -> str | None: ...

    def count_decoded(self, blobs: int, nbytes: int) -> None: ...


class RestoreWorkers:
    """Worker processes that write pack ranges into the restore's files; thread-safe."""

    def __init__(
        self,
        key: MasterKey,
        processes: int,
        pack_path: Callable[[str], str | None],
        on_decoded: Callable[[int, int], None],
        fds_per_task: int = FDS_PER_TASK,
    ) -> None:
        self.pack_path = pack_path  # the file of a pack, None where a worker cannot read it
        self.on_decoded = on_decoded  # (blobs, bytes) the workers decoded: the repository's read stats
        self.fds_per_task = fds_per_task
        start = _Start(key.encrypt, key.id_key)
        self._pool: WorkerPool[_Worker] = WorkerPool(lambda: _Worker(start), processes, TASKS_QUEUED)

    @property
    def pids(self) -> list[int]:
        return self._pool.pids

    def run(self, task: Task, fds: list[int]) -> list[BlobDone]:
        """Do a task in the next free worker; WorkerGone if it ended (or all have)."""
        if not self._pool.usable:
            raise WorkerGone("no restore worker is running")
        with self._pool.borrowed() as worker:
            return worker.run(task, fds)

    def shutdown(self) -> None:
        """Stop every worker (the threads using them are done, or get WorkerGone)."""
        self._pool.shutdown()


class LazyRestoreWorkers:
    """A restore's workers, started when the first batch worth them runs (a restore of a handful
    of files never pays for their start); none for storage they cannot read, or once starting
    them failed. Thread-safe."""

    def __init__(self, source: WorkerSource | None, processes: int | None = None) -> None:
        self._source = source
        self._processes = default_processes() if processes is None else processes
        self._workers: RestoreWorkers | None = None
        self._given_up = source is None or self._processes < 1
        self._lock = threading.Lock()

    @property
    def processes(self) -> int:
        """How many workers a large enough restore uses (0: none)."""
        return 0 if self._given_up else self._processes

    @property
    def threads(self) -> int:
        """Threads that keep them busy: one per task they hold at once."""
        return self.processes * TASKS_QUEUED

    def for_batch(self, files: int, planned_bytes: int) -> RestoreWorkers | None:
        if self._given_up or (files < WORTH_FILES and planned_bytes < WORTH_BYTES):
            return None
        with self._lock:
            if self._workers is None and not self._given_up:
                self._workers = self._start()
            return self._workers

    def _start(self) -> RestoreWorkers | None:
        assert self._source is not None
        key = self._source.sealing_keys()
        fds = descriptors_per_task(self._processes * TASKS_QUEUED)
        try:
            if key is not None and fds >= MIN_FDS_PER_TASK:
                return RestoreWorkers(
                    key, self._processes, self._source.local_pack_path, self._source.count_decoded, fds
                )
        except OSError as err:
            log.warning("restore workers could not start (%s); restoring in this process", err)
        self._given_up = True
        return None

    @property
    def started(self) -> RestoreWorkers | None:
        return self._workers

    def shutdown(self) -> None:
        with self._lock:
            self._given_up = True
            if self._workers is not None:
                self._workers.shutdown()


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
