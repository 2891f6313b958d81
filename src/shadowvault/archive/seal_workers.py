"""Small files sealed in worker processes: the second core for the part of a backup Python serializes.

Reading a small file and sealing it as one DATA blob (open, fstat, read, keyed BLAKE3, zstd,
AES-GCM) is a dozen short calls; in threads of one process they queue for the GIL, so however many
reader threads there are, a tree of small files is backed up on about one core (measured: 4 threads,
wall time == CPU time). Worker processes have GILs of their own. A batch of paths goes to a worker,
which opens them all before reading any (their reads started at once: `small_files.open_ahead`) and
returns per file what fstat said and the sealed blob; the backup's process keeps everything
that is the repository's state (deduplication, the in-flight set, packs, the index) and appends the
blobs it does not have yet. Workers hold the repository's keys, in memory only, like the backup's
own process; they draw their own nonces.

Workers start when a backup has handed over a few batches (a backup of a handful of files never
pays for them) and end with it. Each is `python -m shadowvault.archive.seal_worker` (that module is
the worker's side and its protocol), not multiprocessing: its children re-import the parent's main
script, which a program embedding Shadowvault need not guard.
"""

from __future__ import annotations

import marshal
import subprocess
import sys

from shadowvault.archive import seal_worker
from shadowvault.archive.seal_worker import SealedFile, receive, send
from shadowvault.archive.worker_pool import Turns, WorkerPool, end
from shadowvault.repo.sealing import MasterKey

__all__ = ["BATCHES_QUEUED", "SealWorkers", "SealedFile", "WorkerGone"]


class WorkerGone(Exception):
    """A seal worker ended or stopped answering: the batch is to be read in the backup's process."""


BATCHES_QUEUED = 2  # batches a worker holds: the next waits in its pipe while its last answer is read


class _Worker:
    """One worker process, used by up to BATCHES_QUEUED threads at a time: their batches are sent one
    after another and answered in the order sent, each thread taking its own answer."""

    def __init__(self, start: tuple[bytes, bytes, int]) -> None:
        # stderr to /dev/null: a worker's last words must not land among a --json run's lines (its
        # exit status is reported instead)
        self.process = subprocess.Popen(
            [sys.executable, "-m", seal_worker.__name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self.alive = True
        self._turns = Turns()
        self._call(start)

    def _call(self, message: object) -> None:
        assert self.process.stdin is not None
        try:
            send(self.process.stdin, message)
        except (OSError, ValueError) as err:
            self.alive = False
            raise WorkerGone(f"seal worker {self.process.pid}: {err}") from err

    def seal(self, paths: list[bytes]) -> list[SealedFile]:
        if not self.alive:
            raise WorkerGone(f"seal worker {self.process.pid} ended")

        def send() -> None:
            try:
                self._call(paths)
            except WorkerGone:
                end(self)

        results = self._turns.exchange(send, lambda: self._answer(len(paths)))
        if results is None:
            raise WorkerGone(f"seal worker {self.process.pid} ended (exit status {self.process.poll()})")
        return results

    def _answer(self, files: int) -> list[SealedFile] | None:
        """The next answer, or None once the worker is gone; a worker whose answer makes no sense is
        ended (the answers queued after it could not be told apart)."""
        if not self.alive:
            return None
        assert self.process.stdout is not None
        try:
            body = receive(self.process.stdout)
            results = None if body is None else [SealedFile._make(each) for each in marshal.loads(body)]
        except (OSError, ValueError, EOFError, TypeError):  # ValueError: closed by shutdown meanwhile
            results = None
        if results is None or len(results) != files:
            end(self)
            return None
        return results

    def stop(self) -> None:
        """Close its input (it exits) and reap it; kill it if it does not go."""
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class SealWorkers:
    """Worker processes that seal batches of small files under the repository's keys; thread-safe."""

    def __init__(self, key: MasterKey, limit: int, processes: int) -> None:
        start = (key.encrypt, key.id_key, limit)
        self._pool: WorkerPool[_Worker] = WorkerPool(lambda: _Worker(start), processes, BATCHES_QUEUED)

    @property
    def stopped(self) -> bool:
        return self._pool.stopped

    @property
    def processes(self) -> int:
        return len(self._pool.pids)

    @property
    def pids(self) -> list[int]:
        return self._pool.pids

    def seal(self, paths: list[bytes]) -> list[SealedFile]:
        """Seal a batch in the next free worker; WorkerGone if it ended (or all have)."""
        if not self._pool.usable:
            raise WorkerGone("no seal worker is running")
        with self._pool.borrowed() as worker:
            return worker.seal(paths)

    def shutdown(self) -> None:
        """Stop every worker (the threads using them are done, or get WorkerGone)."""
        self._pool.shutdown()
