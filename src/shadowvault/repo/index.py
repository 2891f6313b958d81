"""The in-memory blob index: blob id -> (pack, offset, length), kept compact.

Blobs read from index files live in flat sorted arrays (index_sorted.py: ~57 B per blob, no Python
object per blob). Blobs added during a session (this process's new packs) go into a small dict on
top, frozen into sorted segments of the same layout as it fills (index_segments.py). BlobIndex is
the front over both: pack numbers, pending and damaged copies, and which copy a lookup returns.
bench/repo_micro.py measures both.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import NamedTuple

from shadowvault.errors import IntegrityError
from shadowvault.repo.format import BlobType, IndexPack, PackBlob
from shadowvault.repo.index_segments import Segments
from shadowvault.repo.index_sorted import NONE, SEVERAL, BulkParts, SortedBase, SortedBuilder

_B32 = (1 << 32) - 1
_BLOB_TYPES = (BlobType.DATA, BlobType.TREE)  # by number, without an enum call per lookup
# Blobs added during a session wait in a dict (~160 B each: the id, a packed int, a slot) until
# this many, then are frozen into a sorted segment laid out as the bulk entries (57 B each): a
# first backup of a million files held 150 MB of dict. Segments are never merged (each entry is
# built once); a lookup the segments' Bloom filter passes bisects each (a few at a million blobs).
SEGMENT_BLOBS = 1 << 18


class BlobLocation(NamedTuple):
    """Where one copy of a blob is. (A NamedTuple: a restore makes one per blob it plans, and a
    frozen dataclass cost three times as much to make.)"""

    pack: str
    type: BlobType
    offset: int
    length: int
    raw_length: int
    compressed: bool
    pending: bool  # the pack is pending deletion by prune: readable, but never deduplicated against


class BlobIndex:
    """Thread-safe map of blob ids to their location; a blob in several packs prefers a live pack."""

    def __init__(self) -> None:
        self._base = SortedBase()
        # added after the bulk load (this session's packs): the newest in a dict, the others in
        # sorted segments (SEGMENT_BLOBS); one tuple, swapped whole, so a reader without the lock
        # finds every entry in the one or the other
        self._top: tuple[dict[bytes, int], Segments] = ({}, Segments())
        self._packs: list[str] = []
        self._pack_numbers: dict[str, int] = {}
        self._pending: set[int] = set()
        # damage (repo/damage.py): whole packs, and single copies (blob id -> pack numbers)
        self._damaged_packs: set[int] = set()
        self._damaged_copies: dict[bytes, set[int]] = {}
        self._no_dedup: set[int] = set()  # pending or wholly damaged: never deduplicated against
        self._lock = threading.Lock()

    @classmethod
    def from_packs(cls, packs: Iterable[IndexPack]) -> BlobIndex:
        """Bulk load (the index files of a repository) into the compact sorted form."""
        index = cls()
        builder = SortedBuilder()
        # Pack ids are kept as raw bytes in one buffer while index files are decoded, and turned
        # into strings only at the end: a long-lived string made in the middle of each decoded file
        # pinned its allocator arena, and 1M blobs cost 350 MB of RSS instead of 65 MB.
        numbers: dict[bytes, int] = {}
        raw_ids = bytearray()
        pending = bytearray()
        for pack in packs:
            try:
                key = bytes.fromhex(pack.id)
            except ValueError:
                key = b""
            if len(key) != 32:
                raise IntegrityError(f"an index file lists an invalid pack id {pack.id[:20]!r}")
            number = numbers.get(key)
            if number is None:
                number = numbers[key] = len(pending)
                raw_ids += key
                pending.append(0)
            if pack.pending is not None:
                pending[number] = 1  # sticky: any index file saying "pending" wins
            builder.add(number, pack.blobs)
        del numbers
        index._base = builder.build()
        del builder
        index._packs = [raw_ids[i * 32 : (i + 1) * 32].hex() for i in range(len(pending))]
        index._pack_numbers = {pack_id: i for i, pack_id in enumerate(index._packs)}
        index._pending = {i for i, flag in enumerate(pending) if flag}
        index._no_dedup = set(index._pending)
        return index

    def bulk_parts(self) -> BulkParts:
        """The bulk-loaded part (what `from_packs` built) as flat arrays."""
        base = self._base
        return BulkParts(
            base.keys,
            base.ids,
            base.packs_offsets,
            base.lengths,
            base.raw_lengths,
            base.flags,
            base.shift,
            base.directory,
            base.directory_shift,
            b"".join(bytes.fromhex(pack_id) for pack_id in self._packs),
            array("I", sorted(self._pending)),
        )

    @classmethod
    def from_bulk(cls, parts: BulkParts) -> BlobIndex:
        """The index `bulk_parts` described; IntegrityError when its parts do not fit together."""
        n = len(parts.flags)
        packs = len(parts.packs) // 32
        if not (
            len(parts.keys) == len(parts.packs_offsets) == len(parts.lengths) == len(parts.raw_lengths) == n
            and len(parts.ids) == 32 * n
            and len(parts.packs) == 32 * packs
            and 0 < parts.shift <= 64
            and 0 < parts.directory_shift <= 64
            and len(parts.directory) == (1 << (64 - parts.directory_shift)) + 1
            and all(number < packs for number in parts.pending)
        ):
            raise IntegrityError("the parts of a kept index do not fit together")
        index = cls()
        base = index._base
        base.keys, base.ids, base.packs_offsets = parts.keys, parts.ids, parts.packs_offsets
        base.lengths, base.raw_lengths, base.flags = parts.lengths, parts.raw_lengths, parts.flags
        base.shift, base.directory, base.directory_shift = parts.shift, parts.directory, parts.directory_shift
        index._packs = [parts.packs[i * 32 : (i + 1) * 32].hex() for i in range(packs)]
        index._pack_numbers = {pack_id: i for i, pack_id in enumerate(index._packs)}
        index._pending = set(parts.pending)
        index._no_dedup = set(index._pending)
        return index

    def watch_bulk_lookups(self, looked_up: Callable[[int], bool]) -> None:
        """Tell `looked_up` the number of ids each lookup in the bulk-loaded entries asks for,
        until it answers False (index_cache.py lets go of a mapped file's pages meanwhile)."""
        self._base.looked_up = looked_up

    def __len__(self) -> int:
        entries, segments = self._top
        return len(self._base) + len(entries) + len(segments)

    def __contains__(self, blob_id: bytes) -> bool:
        return self.lookup(blob_id) is not None

    @property
    def pack_ids(self) -> list[str]:
        return list(self._packs)

    def _pack_number(self, pack_id: str, pending: bool) -> int:
        number = self._pack_numbers.get(pack_id)
        if number is None:
            number = len(self._packs)
            self._packs.append(pack_id)
            self._pack_numbers[pack_id] = number
        if pending:  # sticky: any index file saying "pending" wins, so dedup never relies on it
            self._pending.add(number)
            self._no_dedup.add(number)
        return number

    def mark_damaged(self, pack_id: str, blob_id: bytes | None = None) -> None:
        """A copy (or, without `blob_id`, every copy in the pack) is damaged: it is never deduplicated
        against, and a lookup returns it only when no intact copy exists."""
        with self._lock:
            number = self._pack_numbers.get(pack_id)
            if number is None:
                return  # not indexed: nothing could use it
            if blob_id is None:
                self._damaged_packs.add(number)
                self._no_dedup.add(number)
            else:
                self._damaged_copies.setdefault(blob_id, set()).add(number)

    def _rank(self, number: int, blob_id: bytes) -> int:
        """0 for an intact live copy, 1 pending deletion, 2 damaged."""
        if number in self._damaged_packs or number in self._damaged_copies.get(blob_id, ()):
            return 2
        return 1 if number in self._pending else 0

    def add_pack(self, pack: IndexPack) -> bool:
        return self.add(pack.id, pack.blobs, pending=pack.pending is not None)

    def add(self, pack_id: str, blobs: list[PackBlob], *, pending: bool = False) -> bool:
        """Index a pack on top of the bulk-loaded entries; False when a blob already had an entry on
        top in another pack (the dict on top keeps one copy: for more, build with `from_packs`)."""
        alone = True
        with self._lock:
            number = self._pack_number(pack_id, pending)
            entries, segments = self._top
            for b in blobs:
                packed = (
                    (number << 98)
                    | (b.offset << 66)
                    | (b.length << 34)
                    | (b.raw_length << 2)
                    | (int(b.type) << 1)
                    | int(b.compressed)
                )
                old = entries.get(b.id)
                if old is not None and (old >> 98) != number:
                    alone = False
                if old is not None and pending and (old >> 98) not in self._pending:
                    continue  # keep the live copy
                entries[b.id] = packed
            if len(entries) >= SEGMENT_BLOBS:
                self._top = ({}, segments.frozen(entries))
        return alone

    def has_blob(self, blob_id: bytes) -> bool:
        """True if the blob is stored in a pack that is not pending deletion (safe to deduplicate)."""
        return self.has_all((blob_id,))

    def has_all(self, blob_ids: Iterable[bytes]) -> bool:
        """`has_blob` of every id, in one call: an incremental backup asks it of the content of
        every unchanged file (no location object is built)."""
        damaged, unusable = self._damaged_copies, self._no_dedup
        entries, segments = self._top
        if not damaged and not entries and not segments.parts:  # a no-change backup's every ask
            return self._base.has_all_live(blob_ids, unusable)
        in_base: list[bytes] = []
        for blob_id in blob_ids:
            if damaged and blob_id in damaged:  # rare: look at every copy
                if not any(self._rank(number, blob_id) == 0 for number in self._numbers_of(blob_id)):
                    return False
                continue
            packed = entries.get(blob_id)
            if packed is None or (packed >> 98) in unusable:
                in_base.append(blob_id)
        if not segments.parts:
            return not in_base or self._base.has_all_live(in_base, unusable)
        base = self._base
        for blob_id in in_base:  # one by one: a backup asks one id at a time of a long session
            for tier in (base, *segments.holding(blob_id)):
                if tier.has_live(blob_id, unusable):
                    break
            else:
                return False
        return True

    def _numbers_of(self, blob_id: bytes) -> Iterator[int]:
        entries, segments = self._top
        packed = entries.get(blob_id)
        if packed is not None:
            yield packed >> 98
        for tier, at in self._sorted_copies(segments, blob_id):
            yield tier.packs_offsets[at] >> 32

    def _sorted_copies(self, segments: Segments, blob_id: bytes) -> Iterator[tuple[SortedBase, int]]:
        """The copies of `blob_id` in the frozen segments and the bulk entries: (where, position)."""
        for tier in (*segments.holding(blob_id), self._base):
            for at in tier.positions(blob_id):
                yield tier, at

    def _from_entry(self, packed: int) -> BlobLocation:
        number = packed >> 98
        return BlobLocation(
            pack=self._packs[number],
            type=_BLOB_TYPES[(packed >> 1) & 1],
            offset=(packed >> 66) & _B32,
            length=(packed >> 34) & _B32,
            raw_length=(packed >> 2) & _B32,
            compressed=bool(packed & 1),
            pending=number in self._pending,
        )

    def _from_base(self, base: SortedBase, at: int) -> BlobLocation:
        packed = base.packs_offsets[at]
        number = packed >> 32
        flags = base.flags[at]
        return BlobLocation(
            pack=self._packs[number],
            type=_BLOB_TYPES[flags >> 1],
            offset=packed & _B32,
            length=base.lengths[at],
            raw_length=base.raw_lengths[at],
            compressed=bool(flags & 1),
            pending=number in self._pending,
        )

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        """Where the blob is: an intact copy in a live pack wins over one pending deletion, and
        both over a damaged copy. (Most blobs have one copy: that one, without ranking.)"""
        entries, segments = self._top
        if blob_id not in entries:
            only: tuple[SortedBase, int] | None = None
            for tier in (*segments.holding(blob_id), self._base):
                at = tier.sole_position(blob_id)
                if at == NONE:
                    continue
                if at == SEVERAL or only is not None:
                    return self.locations(blob_id)[0]
                only = (tier, at)
            return None if only is None else self._from_base(*only)
        return next(iter(self.locations(blob_id)), None)

    def locations(self, blob_id: bytes) -> list[BlobLocation]:
        """Every indexed copy of the blob, best first (see `lookup`)."""
        found: list[tuple[int, BlobLocation]] = []
        entries, segments = self._top
        packed = entries.get(blob_id)
        if packed is not None:
            found.append((self._rank(packed >> 98, blob_id), self._from_entry(packed)))
        for tier, at in self._sorted_copies(segments, blob_id):
            number = tier.packs_offsets[at] >> 32
            found.append((self._rank(number, blob_id), self._from_base(tier, at)))
        if len(found) > 1:
            found.sort(key=lambda item: item[0])
        return [location for _, location in found]

    def blobs_in(self, pack_ids: Collection[str]) -> dict[str, list[bytes]]:
        """The ids of the blobs indexed in each of `pack_ids`, by a walk over every entry: for the
        few packs check finds damaged (keeping the ids of every pack cost it 32 B per blob). A blob
        added since the bulk load in two packs counts in the last one only (the dict on top)."""
        found: dict[str, list[bytes]] = {pack_id: [] for pack_id in pack_ids}
        wanted = {self._pack_numbers[p]: p for p in pack_ids if p in self._pack_numbers}
        if not wanted:
            return found
        entries, segments = self._top
        for blob_id, packed in entries.items():
            if (pack_id := wanted.get(packed >> 98)) is not None:
                found[pack_id].append(blob_id)
        for tier in (*segments.parts, self._base):
            ids = tier.ids
            for at, packed in enumerate(tier.packs_offsets):
                if (pack_id := wanted.get(packed >> 32)) is not None:
                    found[pack_id].append(bytes(ids[at * 32 : (at + 1) * 32]))
        return found

    def is_damaged(self, location: BlobLocation, blob_id: bytes) -> bool:
        number = self._pack_numbers.get(location.pack)
        return number is not None and self._rank(number, blob_id) == 2

    def slot(self, blob_id: bytes) -> int | None:
        """A stable number below `bulk_size` for a blob of the bulk-loaded entries (its first copy);
        None for a blob added since, or unknown: for one bit per blob (check's used set)."""
        return self._base.first(blob_id)

    def slots(self, blob_ids: Iterable[bytes]) -> list[int | None]:
        """`slot` of each id, in one call."""
        return self._base.firsts(blob_ids)

    @property
    def bulk_size(self) -> int:
        return len(self._base)

    def bulk_raw_lengths(self) -> Sequence[int]:
        """The plaintext length of each bulk entry, by `slot` (check sums files' blobs with it,
        from the slots it has already found, without looking a blob up again)."""
        return self._base.raw_lengths

    def blob_ids(self) -> Iterator[bytes]:
        """Every indexed blob id, once (a blob stored in several packs too), without a set of them
        all: the bulk entries are visited in sort order, where the copies of one id are adjacent."""
        return (blob_id for blob_id, _slot in self.slotted_blob_ids())

    def slotted_blob_ids(self) -> Iterator[tuple[bytes, int | None]]:
        """`blob_ids`, each with its `slot` (None for a blob added since the bulk load): a bulk
        entry's is where the sorted walk meets its first copy, with no lookup."""
        entries, segments = self._top
        for blob_id in list(entries):
            yield blob_id, None
        parts = segments.parts
        for n, segment in enumerate(parts):
            for blob_id, _ in segment.distinct():
                if blob_id not in entries and all(s.first(blob_id) is None for s in parts[:n]):
                    yield blob_id, None
        for blob_id, at in self._base.distinct():
            # `parts and`: no generator per blob of the bulk walk when nothing was frozen (check)
            if blob_id not in entries and not (parts and any(s.first(blob_id) is not None for s in parts)):
                yield blob_id, at
