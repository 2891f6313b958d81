"""Pack ranges decoded and written in worker processes: the second core for a restore.

A restore spends most of its time on short calls per blob (read the pack range, decrypt,
decompress, check the blob's id, write it to every file that needs it); in threads of one process
they queue for the GIL, so a restore ran on about one core. Worker processes have GILs of their
own. The restore's process keeps what is its state: the walk, the plan, what was restored.

Most files of a tree are one blob each, and creating, timing and naming them cost the restore's
process as much as decoding cost the workers, so a worker makes such a file whole when that is
all there is to it (new in a directory this restore made, its mode and owner as created, no
xattrs: `NewFile`). Any other file the restore's process creates (unnamed) and finishes (metadata,
the read-back, its name); the worker writes its blobs into it, through the descriptor passed with
the task. The repository must be a local directory (a worker reads the pack file itself, so a task
may be a whole pack); remote storage keeps its reader threads. A worker holds TASKS_QUEUED tasks:
the next one waits in its socket while the restore's process reads the last answer and builds the
task after, so the worker does not wait on the restore's process (2 GiB / 100k files on 2 CPUs,
cold: 9.8-16.9 s with one task per worker and a task per run of nearby blobs, 8.6-14.7 s now, in
interleaved runs).

A blob a worker could not read, or that failed verification, is read again by the restore's
process, which knows the other copies and records the damage; a worker that dies fails nothing
either: its task is done again in the restore's process, and that worker is not used again.

Each worker is `python -m shadowvault.archive.restore_worker FD` (that module is the worker's side
and its protocol), not multiprocessing: its children re-import the parent's main script, which a
program embedding Shadowvault need not guard.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Protocol

import msgspec

from shadowvault.archive import restore_worker
from shadowvault.archive.restore_worker import FDS_PER_TASK, MAX_MESSAGE, BlobDone, Start, Task
from shadowvault.archive.worker_pool import Turns, WorkerPool, end
from shadowvault.errors import UsageError
from shadowvault.repo.sealing import MasterKey

log = logging.getLogger(__name__)

PROCESSES_ENV = "SHADOWVAULT_RESTORE_PROCESSES"
WORTH_FILES = 64  # a batch of fewer files (and bytes) than these is restored without workers
WORTH_BYTES = 8 << 20
MIN_FDS_PER_TASK = 16  # under a descriptor limit that leaves less, a restore does without workers
TASKS_QUEUED = 2  # tasks a worker holds: the next waits in its socket while its last answer is read


class WorkerGone(Exception):
    """A restore worker ended or stopped answering: the task is done in the restore's process."""


_encoder = msgspec.msgpack.Encoder()


class _Worker:
    """One worker process, used by up to TASKS_QUEUED threads at a time: their tasks are sent one
    after another and answered in the order sent, each thread taking its own answer."""

    def __init__(self, start: Start) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # stderr to /dev/null: a worker's last words must not land among a --json run's lines
            self.process = subprocess.Popen(
                [sys.executable, "-m", restore_worker.__name__, str(theirs.fileno())],
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
        start = Start(key.encrypt, key.id_key)
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
