"""Read many blobs with each pack read once: restic's restorer, for the archive layer.

A restore that loads blob by blob costs one backend read per blob: a tree of small files is one
read per file, and on object storage one request each. Here the wanted blobs are grouped by pack
and cut into ranges (split where the gap between needed blobs is large, or where the range would
grow past `MAX_SPAN`, which bounds memory); the repository reads each range once and verifies
every blob on its own (`load_pack_blobs`: a blob whose copy fails is loaded from another copy and
the damage recorded, so one bad blob fails only itself).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from shadowvault.errors import ShadowvaultError
from shadowvault.repo.index import BlobLocation
from shadowvault.repo.reader import LoadedBlob
from shadowvault.repo.zero_blobs import ZeroBlobs

MAX_GAP = 1 << 20  # unneeded bytes worth reading through rather than starting another read
MAX_SPAN = 4 << 20  # at most this much of a pack is held by one read (one blob may be larger)


class PackedBlobs(Protocol):
    """What grouped reads need from a repository: where blobs are, a pack's blobs read at once, and
    one blob alone (for a blob the index does not place), and which ids are runs of zeros (never
    read)."""

    @property
    def zero_blobs(self) -> ZeroBlobs: ...

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
