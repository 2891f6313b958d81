"""A seal worker process: reads batches of small files and seals each as one DATA blob.

The other side of archive/seal_workers.py, which starts it as `python -m
shadowvault.archive.seal_worker`. It imports only what sealing needs (AES-GCM, BLAKE3, zstd; not
msgspec, the repository or the backup): every module it loads is memory that a backup holds once
more for each worker (msgspec, subprocess and the walk's modules were ~5 MiB of its ~14).

Its stdin and stdout carry length-prefixed `marshal` data, both ends being this same interpreter
(`sys.executable`): first (encryption key, id key, size limit), then batches (lists of paths), each
answered by one SealedFile tuple per path. It ends when its stdin closes; SIGINT is the backup's to
handle, so it ignores it.
"""

from __future__ import annotations

import marshal
import os
import signal
import struct
import sys
from typing import IO, Any, NamedTuple

from shadowvault.archive.small_files import (
    FileError,
    changed_since,
    open_ahead,
    open_for_reading,
    os_reason,
    read_upto,
    regular_file_stat,
)
from shadowvault.repo.sealing import BlobType, MasterKey, Sealer, seal_blob
from shadowvault.repo.zero_blobs import is_zeros

_LENGTH = struct.Struct("<I")


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
    sealed: bytes = b""
    compressed: bool = False


def send(stream: IO[bytes], message: Any) -> None:
    """Write one message (what `marshal` takes: tuples, lists, bytes, str, int, bool, None)."""
    body = marshal.dumps(message)
    stream.write(_LENGTH.pack(len(body)))
    stream.write(body)  # not joined to its length: a batch's answer is megabytes, copied once more
    stream.flush()


def receive(stream: IO[bytes]) -> bytes | None:
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
    return seen._replace(blob_id=blob_id, sealed=nonce + ciphertext, compressed=compressed)


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """A worker's loop: the start message, then one reply per batch of paths, until end of input."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    first = receive(requests)
    if first is None:
        return
    encrypt, id_key, limit = marshal.loads(first)
    sealer = Sealer(MasterKey(encrypt, id_key))
    while (body := receive(requests)) is not None:
        opened = open_ahead(marshal.loads(body), limit)
        send(replies, [tuple(_seal_one(sealer, limit, each)) for each in opened])


if __name__ == "__main__":
    # replies on a copy of stdout; whatever else writes to stdout goes to stderr, not into the protocol
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, replies)
