"""Read many blobs with each pack read once: restic's restorer, for the archive layer.

A restore that loads blob by blob costs one backend read per blob: a tree of small files is one
read per file, and on object storage one request each. Here the wanted blobs are grouped by pack,
each pack's needed span is read in one ranged load (split where the gap between needed blobs is
large, or where the span would grow past `MAX_SPAN`, which bounds memory), and every blob is
verified on its own. A blob whose copy fails verification is loaded again with
`load_blob`, which tries every other copy and records the damage: one bad blob fails only itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from shadowvault.errors import ShadowvaultError
from shadowvault.repo.index import BlobLocation
from shadowvault.repo.pack import pack_name

MAX_GAP = 1 << 20  # unneeded bytes worth reading through rather than starting another read
MAX_SPAN = 4 << 20  # at most this much of a pack is held by one read (one blob may be larger)


class RangeLoader(Protocol):
    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes: ...


class PackedBlobs(Protocol):
    """What grouped reads need from a repository: where blobs are, ranged reads, verification."""

    @property
    def backend(self) -> RangeLoader: ...

    def lookup(self, blob_id: bytes) -> BlobLocation | None: ...

    def decode_blob(self, blob_id: bytes, location: BlobLocation, sealed: bytes) -> bytes: ...

    def load_blob(self, blob_id: bytes) -> bytes: ...


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
    """Each blob of the range with its verified plaintext, or the error that fails it.

    The range is loaded once; a blob that the range does not hold intact (a damaged or missing
    pack, a failed verification) is loaded alone through `load_blob`, which tries its other copies."""
    raw: bytes | None
    try:
        raw = store.backend.load(pack_name(planned.pack), planned.offset, planned.length)
    except ShadowvaultError:
        raw = None  # each blob below says why, through load_blob
    for blob in planned.blobs:
        data: bytes | None = None
        if raw is not None:
            start = blob.location.offset - planned.offset
            try:
                data = store.decode_blob(
                    blob.blob_id, blob.location, raw[start : start + blob.location.length]
                )
            except ShadowvaultError:
                data = None
        if data is None:
            try:
                data = store.load_blob(blob.blob_id)
            except ShadowvaultError as err:
                yield blob, err
                continue
        yield blob, data
