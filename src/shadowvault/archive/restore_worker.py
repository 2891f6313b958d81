"""A restore worker process: decodes the blobs of a pack range and writes them into the restore's files.

The other side of archive/restore_workers.py, which starts it as `python -m
shadowvault.archive.restore_worker FD`, FD its end of a Unix socket pair (SOCK_SEQPACKET: one
message per send, msgpack); this module is the worker's side and its protocol. The first message
holds the repository's keys, in memory only, as in the restore's own process; then each task
(`Task`: a range of one pack file, its blobs and where each goes) comes with the descriptors of
the files and directories it writes into (SCM_RIGHTS): a worker never resolves a path of the
target, only a new file's one name in a directory the restore made (`NewFile`: created unnamed,
written, given its times, read back for --verify and linked under its name; on failure nothing is
left). It reads the pack file itself, READ_WINDOW at a time, skipping gaps of READ_GAP or more (so
a task may be a whole pack), and answers per blob (`BlobDone`): its digest (for --verify), the
places it could not write and the new files it could not make. SIGINT is the restore's to handle:
a worker ignores it and ends when its socket closes.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import NamedTuple

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
from shadowvault.errors import IntegrityError
from shadowvault.fsutil import open_regular
from shadowvault.repo.index import BlobLocation
from shadowvault.repo.pack import open_blob
from shadowvault.repo.sealing import MasterKey, Sealer
from shadowvault.typed_decoding import decode_msgpack

MAX_MESSAGE = 1 << 20  # a task or its answer (tens of KiB: a task has at most PLACES_PER_TASK places)
FDS_PER_TASK = 128  # descriptors passed with one task (the kernel takes at most 253 per message)
PLACES_PER_TASK = 1024  # places (a file and an offset in it) one task writes
# names of the new files of one task: a task is one datagram, which must fit the socket's send
# buffer (net.core.wmem_default, ~208 KiB), and 1024 names may be 255 bytes each
NAME_BYTES_PER_TASK = 64 << 10
READ_WINDOW = 4 << 20  # what a worker reads of a pack at once (a larger blob is read alone)
# unneeded bytes between two blobs worth reading through rather than skipping: a read costs a few
# microseconds, copying 64 KiB about as much (2 GiB / 100k files, cold: 1 MiB read 1.9 GB for 1.4 GB
# of blobs, 64 KiB 1.43 GB, and took ~0.4 s less system time)
READ_GAP = 64 << 10


class Start(NamedTuple):
    """The first message: the repository's keys."""

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
    start = decode_msgpack(first, Start)
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


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
