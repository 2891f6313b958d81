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
pays for them) and end with it. Each is `python -m shadowvault.archive.seal_workers`, spoken to over
its stdin and stdout in length-prefixed msgpack: first the keys and the size limit, then batches of
paths, each answered by one result per path. (Not multiprocessing: its children re-import the
parent's main script, which a program embedding Shadowvault need not guard.) A worker ends when its
stdin closes; SIGINT is the backup's to handle, so it ignores it.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
from typing import IO, NamedTuple

import msgspec

from shadowvault.archive.small_files import (
    FileError,
    changed_since,
    open_ahead,
    open_for_reading,
    read_upto,
    regular_file_stat,
)
from shadowvault.archive.walk_stats import os_reason
from shadowvault.archive.worker_pool import Turns, WorkerPool, end
from shadowvault.repo.crypto import MasterKey, Sealer
from shadowvault.repo.format import BlobType
from shadowvault.repo.pack import seal_blob
from shadowvault.repo.zero_blobs import is_zeros
from shadowvault.typed_decoding import decode_msgpack


class SealedFile(NamedTuple):
    """What a worker made of one file."""

    error: str | None = None  # why it could not be read (nothing else is set)
    large: bool = False  # it grew past the small-file limit: the backup's process reads it itself
    mtime_ns: int = 0  # the fstat of the open file
    ctime_ns: int = 0
    inode: int = 0
    sparse: bool = False
    size: int = 0  # bytes read
    changed: bool = False  # written while it was read
    zeros: bool = False  # every byte zero: stored as zero blobs, not sealed here
    blob_id: bytes = b""  # the sealed DATA blob (empty for an empty file or zeros)
    # a view of the answer's body (msgspec decodes it without a copy): a batch's blobs were
    # copied out one by one, megabytes of short-lived allocations the heap kept fragmented
    sealed: memoryview = memoryview(b"")
    compressed: bool = False


class WorkerGone(Exception):
    """A seal worker ended or stopped answering: the batch is to be read in the backup's process."""


class _Start(NamedTuple):
    encrypt: bytes
    id_key: bytes
    limit: int


BATCHES_QUEUED = 2  # batches a worker holds: the next waits in its pipe while its last answer is read
_LENGTH = struct.Struct("<I")
_encoder = msgspec.msgpack.Encoder()


def _send(stream: IO[bytes], message: object) -> None:
    body = _encoder.encode(message)
    stream.write(_LENGTH.pack(len(body)) + body)
    stream.flush()


def _receive(stream: IO[bytes]) -> bytes | None:
    """One message's body; None at end of stream."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    body = stream.read(length)
    return body if len(body) == length else None


def _seal_one(sealer: Sealer, limit: int, opened: int | bytes | FileError) -> SealedFile:
    """Read one file (opened ahead: `open_ahead`) and seal it as one DATA blob (in a worker)."""
    if isinstance(opened, FileError):
        return SealedFile(error=str(opened))
    try:
        fd = open_for_reading(opened) if isinstance(opened, bytes) else opened
    except FileError as err:
        return SealedFile(error=str(err))
    try:
        st = regular_file_stat(fd)
        if st.st_size >= limit:
            return SealedFile(large=True)
        data = read_upto(fd, limit, st.st_size + 1)
        if len(data) >= limit:
            return SealedFile(large=True)
        seen = SealedFile(
            mtime_ns=st.st_mtime_ns,
            ctime_ns=st.st_ctime_ns,
            inode=st.st_ino,
            sparse=st.st_blocks * 512 < st.st_size,
            size=len(data),
            changed=changed_since(fd, st, len(data)),
        )
    except FileError as err:
        return SealedFile(error=str(err))
    except OSError as err:
        return SealedFile(error=os_reason(err))
    finally:
        os.close(fd)
    if not data:
        return seen
    if is_zeros(data):
        return seen._replace(zeros=True)
    blob_id = sealer.blob_id(data)
    (nonce, ciphertext), compressed = seal_blob(sealer, BlobType.DATA, blob_id, data)
    return seen._replace(blob_id=blob_id, sealed=memoryview(nonce + ciphertext), compressed=compressed)


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """A worker's loop: the start message, then one reply per batch of paths, until end of input."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    first = _receive(requests)
    if first is None:
        return
    start = decode_msgpack(first, _Start)
    sealer = Sealer(MasterKey(start.encrypt, start.id_key))
    paths_decoder = msgspec.msgpack.Decoder(list[bytes])
    while (body := _receive(requests)) is not None:
        opened = open_ahead(paths_decoder.decode(body), start.limit)
        _send(replies, [_seal_one(sealer, start.limit, each) for each in opened])


class _Worker:
    """One worker process, used by up to BATCHES_QUEUED threads at a time: their batches are sent one
    after another and answered in the order sent, each thread taking its own answer."""

    def __init__(self, start: _Start) -> None:
        # stderr to /dev/null: a worker's last words must not land among a --json run's lines (its
        # exit status is reported instead)
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self.alive = True
        self._results = msgspec.msgpack.Decoder(list[SealedFile])
        self._turns = Turns()
        self._call(start)

    def _call(self, message: object) -> None:
        assert self.process.stdin is not None
        try:
            _send(self.process.stdin, message)
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
            body = _receive(self.process.stdout)
            results = None if body is None else self._results.decode(body)
        except (OSError, ValueError, msgspec.DecodeError):  # ValueError: closed by shutdown meanwhile
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
        start = _Start(key.encrypt, key.id_key, limit)
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


if __name__ == "__main__":
    # replies on a copy of stdout; whatever else writes to stdout goes to stderr, not into the protocol
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, replies)
