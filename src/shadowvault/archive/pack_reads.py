"""Read many blobs with each pack read once: restic's restorer, for the archive layer.

A restore that loads blob by blob costs one backend read per blob: a tree of small files is one
read per file, and on object storage one request each. Here the wanted blobs are grouped by pack,
each blob once, and each pack is read in ONE ranged read from its first needed blob to its last.
The rule for reading a pack in more than one range: only where MAX_GAP (1 MiB) or more of unneeded
bytes lie between two needed blobs (a pack of which little is needed costs a few small requests
rather than one large one), or where the range would pass MAX_SPAN (32 MiB: never with the default
16 MiB packs; it bounds memory with packs of up to 1 GiB). The repository reads each range once and
verifies every blob on its own (`load_pack_blobs`: a blob whose copy fails is loaded from another
copy and the damage recorded, so one bad blob fails only itself).

`ReadBudget` bounds the memory of all the ranges a restore holds at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from shadowvault.errors import ShadowvaultError
from shadowvault.repo.index import BlobLocation
from shadowvault.repo.reader import MAX_SPAN as READER_MAX_SPAN
from shadowvault.repo.reader import LoadedBlob
from shadowvault.repo.zero_blobs import ZeroBlobs

MAX_GAP = 1 << 20  # unneeded bytes worth reading through rather than starting another read
MAX_SPAN = READER_MAX_SPAN  # at most this much of a pack is held by one read (one blob may be larger)
BYTES_AT_ONCE = 24 << 20  # of ranges read and not yet written, across a restore (1.5 default packs)


class PackedBlobs(Protocol):
    """What grouped reads need from a repository: where blobs are, a pack's blobs read at once, and
    one blob alone (for a blob the index does not place), and which ids are runs of zeros (never
    read)."""

    @property
    def zero_blobs(self) -> ZeroBlobs: ...

    @property
    def reads_wait_on_network(self) -> bool:
        """True for remote storage: several readers at once pay off."""
        ...

    def lookup(self, blob_id: bytes) -> BlobLocation | None: ...

    def load_blob(self, blob_id: bytes) -> bytes: ...

    def load_pack_blobs(self, pack_id: str, blob_ids: Iterable[bytes]) -> Iterator[LoadedBlob]: ...


@dataclass(frozen=True)
class WantedBlob:
    blob_id: bytes
    location: BlobLocation


@dataclass
class PackRange:
    """One ranged read of a pack and the blobs it holds, in pack order."""

    pack: str
    offset: int
    end: int
    blobs: list[WantedBlob] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.end - self.offset


class ReadBudget:
    """The bytes of pack ranges held (read, being written) at once: a read waits for room. A range
    larger than the whole budget waits until it is the only one held. Thread-safe."""

    def __init__(self, limit: int = BYTES_AT_ONCE) -> None:
        self.limit = limit
        self._held = 0
        self._room = threading.Condition()

    def acquire(self, length: int) -> int:
        """Wait for room for `length` bytes; the room taken (at most the limit), to be released."""
        length = min(length, self.limit)
        with self._room:
            while self._held and self._held + length > self.limit:
                self._room.wait()
            self._held += length
        return length

    def release(self, length: int) -> None:
        with self._room:
            self._held -= length
            self._room.notify_all()


def plan_ranges(
    wanted: Iterable[WantedBlob], *, max_gap: int = MAX_GAP, max_span: int = MAX_SPAN
) -> list[PackRange]:
    """The reads that fetch every wanted blob (each blob once), grouped by pack."""
    by_pack: dict[str, dict[bytes, WantedBlob]] = {}
    for blob in wanted:
        by_pack.setdefault(blob.location.pack, {}).setdefault(blob.blob_id, blob)
    ranges: list[PackRange] = []
    for pack, blobs in by_pack.items():
        current: PackRange | None = None
        for blob in sorted(blobs.values(), key=lambda b: b.location.offset):
            start = blob.location.offset
            end = start + blob.location.length
            if current is None or start - current.end > max_gap or end - current.offset > max_span:
                current = PackRange(pack, start, end)
                ranges.append(current)
            current.end = max(current.end, end)
            current.blobs.append(blob)
    return ranges


def read_range(
    store: PackedBlobs, planned: PackRange
) -> Iterator[tuple[WantedBlob, bytes | ShadowvaultError]]:
    """Each blob of the range with its verified plaintext, or the error that fails it (the range
    is read once; see `load_pack_blobs` for damaged copies and moved or missing packs)."""
    wanted = {blob.blob_id: blob for blob in planned.blobs}
    for loaded in store.load_pack_blobs(planned.pack, wanted):
        got = loaded.data if loaded.data is not None else loaded.error
        assert got is not None
        yield wanted[loaded.id], got
