"""Disk images into the repository: fixed-size chunks aligned to the image's clusters, zero runs free.

A stored image is a list of chunk ids, one per `chunk_size` bytes of the guest-visible disk (the
last may be shorter). The copy QEMU made is a qcow2 file; `qemu-img map` says where each guest
range lies in it, so data is read straight from the file (no conversion) and zero or unallocated
ranges are not read at all: every all-zero chunk is the same blob, stored once. An incremental copy
holds only the chunks its dirty bitmap marked (depth 0 in the map); every other chunk is the base
snapshot's chunk, referenced again without being read, so the stored image is always whole and a
restore never needs a chain.
"""

from __future__ import annotations

import bisect
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import msgspec

from shadowvault import cancellation, proc
from shadowvault.errors import ShadowvaultError
from shadowvault.slots import Slots
from shadowvault.typed_decoding import convert

MAP_TIMEOUT = 600.0
WORKERS = max(2, os.cpu_count() or 2)
IN_FLIGHT = 4 * WORKERS


class Extent(msgspec.Struct):
    """One run of `qemu-img map --output=json`."""

    start: int
    length: int
    depth: int = 0
    zero: bool = False
    data: bool = False
    offset: int | None = None  # where the run's data lies in the image file


@dataclass
class ImageStats:
    """What storing one image cost: the figures a user (and the incremental test) checks."""

    size: int = 0
    chunks: int = 0
    bytes_read: int = 0  # read from the copy QEMU made
    chunks_read: int = 0
    chunks_reused: int = 0  # taken from the base snapshot unread
    zero_chunks: int = 0
    new_chunks: int = 0  # not in the repository before
    new_bytes: int = 0
    counted: set[bytes] = field(default_factory=set, repr=False)  # new chunks being stored


@dataclass(frozen=True)
class ImageSink:
    """The repository operations an image needs (Repository provides them)."""

    blob_id: Callable[[bytes], bytes]
    has_blob: Callable[[bytes], bool]
    save_blob: Callable[[bytes], bytes]
    load_blob: Callable[[bytes], bytes]


def image_map(path: str) -> list[Extent]:
    out = proc.output(["qemu-img", "map", "--output=json", "-f", "qcow2", path], timeout=MAP_TIMEOUT)
    return convert(json.loads(out), list[Extent])


def _pieces(extents: list[Extent], ends: list[int], start: int, end: int) -> list[tuple[int, int, Extent]]:
    """(from, to, extent) for every part of [start, end) the map covers, in order (`ends`: each
    extent's end, sorted, so finding the first one is a bisection, not a scan of the whole map)."""
    pieces = []
    for index in range(bisect.bisect_right(ends, start), len(extents)):
        extent = extents[index]
        if extent.start >= end:
            break
        lo, hi = max(start, extent.start), min(end, extent.start + extent.length)
        if lo < hi:
            pieces.append((lo, hi, extent))
    return pieces


def store_image(
    sink: ImageSink,
    copy_path: str,
    virtual_size: int,
    chunk_size: int,
    base_chunks: list[bytes] | None = None,
) -> tuple[list[bytes], ImageStats]:
    """Store the image QEMU copied to `copy_path`; its chunk ids and what it cost.

    With `base_chunks` (an incremental copy) only chunks the copy holds are read; the others are
    the base's. Raises ShadowvaultError when the base does not have this image's shape.
    """
    count = (virtual_size + chunk_size - 1) // chunk_size
    if base_chunks is not None and len(base_chunks) != count:
        raise ShadowvaultError(
            f"the base image has {len(base_chunks)} chunks, this one {count}: a full copy is needed"
        )
    extents = sorted(image_map(copy_path), key=lambda e: e.start)
    ends = [e.start + e.length for e in extents]
    stats = ImageStats(size=virtual_size, chunks=count)
    zero_id: bytes | None = None
    chunks: list[bytes | Future[bytes]] = []
    lock = threading.Lock()
    in_flight = Slots(IN_FLIGHT)  # memory stays bounded: IN_FLIGHT chunks; Ctrl-C cannot wedge it

    def save(data: bytes) -> bytes:
        try:
            return _save(sink, data, stats, lock)
        finally:
            in_flight.release()

    cancelled = cancellation.current()
    fd = os.open(copy_path, os.O_RDONLY | os.O_CLOEXEC)
    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="sv-image")
    try:
        for index in range(count):
            cancellation.check(cancelled)  # a cancelled run stops between chunks
            start = index * chunk_size
            end = min(start + chunk_size, virtual_size)
            pieces = _pieces(extents, ends, start, end)
            copied = [p for p in pieces if p[2].depth == 0]
            if base_chunks is not None and not copied:
                chunks.append(base_chunks[index])
                stats.chunks_reused += 1
                continue
            if all(not p[2].data for p in copied) and (base_chunks is None or len(copied) == len(pieces)):
                stats.zero_chunks += 1
                if end - start == chunk_size:
                    if zero_id is None:
                        zero_id = _save(sink, bytes(chunk_size), stats, lock)
                    chunks.append(zero_id)
                else:
                    chunks.append(_save(sink, bytes(end - start), stats, lock))
                continue
            buffer = bytearray(end - start)
            base: bytes | None = None
            for lo, hi, extent in pieces:
                if extent.depth > 0:  # unchanged part of a partly copied chunk: from the base
                    assert base_chunks is not None
                    base = base if base is not None else sink.load_blob(base_chunks[index])
                    buffer[lo - start : hi - start] = base[lo - start : hi - start]
                elif extent.data and extent.offset is not None:
                    data = os.pread(fd, hi - lo, extent.offset + (lo - extent.start))
                    if len(data) != hi - lo:
                        raise ShadowvaultError(f"{copy_path}: short read at guest offset {lo}")
                    buffer[lo - start : hi - start] = data
                    stats.bytes_read += len(data)
            stats.chunks_read += 1
            if not any(buffer):
                stats.zero_chunks += 1
            in_flight.acquire()
            chunks.append(pool.submit(save, bytes(buffer)))
        return [c if isinstance(c, bytes) else c.result() for c in chunks], stats
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        os.close(fd)


def _save(sink: ImageSink, data: bytes, stats: ImageStats, lock: threading.Lock) -> bytes:
    """Hash, and store unless known (hashing, compression, encryption release the GIL: threads help)."""
    blob_id = sink.blob_id(data)
    if sink.has_blob(blob_id):
        return blob_id
    with lock:  # two threads may meet the same new chunk: the repository stores it once, count it once
        if blob_id not in stats.counted:
            stats.counted.add(blob_id)
            stats.new_chunks += 1
            stats.new_bytes += len(data)
    saved = sink.save_blob(data)
    with lock:  # from now on has_blob() answers for it: the set holds only chunks in flight
        stats.counted.discard(blob_id)
    return saved
