"""The in-memory blob index: blob id -> (pack, offset, length), kept compact.

Blobs read from index files live in flat arrays sorted by a 64-bit sort key (the top bits of the
id, the low bits the entry's position): about 57 bytes per blob (32-byte id, 8-byte key, 8-byte
pack/offset, 4+4 bytes lengths, 1 byte flags) and no Python object per blob, so memory neither
fragments nor grows by the ~360 B per blob a dict of bytes keys measured. Lookups are one C-level
bisect, over the few keys a directory of their top bits leaves (at most 256 KiB), plus a 32-byte
comparison. Blobs added during a session (this process's new packs) go into a
small dict on top, frozen into sorted segments of the same layout as it fills (a first backup of a
million files would hold ~150 MB of dict). bench/repo_micro.py measures both.
"""

from __future__ import annotations

import bisect
import threading
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator
from collections.abc import Set as AbstractSet
from typing import NamedTuple, TypeAlias

from shadowvault.errors import IntegrityError
from shadowvault.repo.format import BlobType, IndexPack, PackBlob

_B32 = (1 << 32) - 1
_BLOB_TYPES = (BlobType.DATA, BlobType.TREE)  # by number, without an enum call per lookup
_NO_PACKS: frozenset[int] = frozenset()
NONE, SEVERAL = -1, -2  # `sole_position` of an id with no entry, and with more than one
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


# The bulk arrays: built in memory, or a view of the kept index's file (index_cache.py maps it:
# only the pages a command looks at are read, so a large repository costs a small backup little).
Numbers: TypeAlias = "array[int] | memoryview"
Bytes: TypeAlias = "bytearray | memoryview"


class BulkParts(NamedTuple):
    """A bulk-loaded index as flat arrays: what `BlobIndex.from_bulk` takes back (index_cache.py
    keeps them on disk between commands)."""

    keys: Numbers
    ids: Bytes
    packs_offsets: Numbers
    lengths: Numbers
    raw_lengths: Numbers
    flags: Bytes
    shift: int
    directory: Numbers
    directory_shift: int
    packs: bytes  # 32 raw bytes per pack, by pack number
    pending: Numbers  # the numbers of the packs pending deletion


class _SortedBase:
    """Immutable arrays built once from index files. Entries stay in load order; `keys` is the
    sorted search structure: the id's top bits above `shift`, the entry's position below."""

    def __init__(self) -> None:
        self.keys: Numbers = array("Q")
        self.ids: Bytes = bytearray()
        self.packs_offsets: Numbers = array("Q")  # pack number << 32 | offset
        self.lengths: Numbers = array("I")
        self.raw_lengths: Numbers = array("I")
        self.flags: Bytes = bytearray()  # type << 1 | compressed
        self.shift = 1
        # where the keys of each value of their top bits start (and, last, where they end): a
        # lookup bisects a few keys, not all of them (a no-change backup looks up every old blob)
        self.directory: Numbers = array("I", [0, 0])
        self.directory_shift = 63
        # told how many ids each lookup call asked for, until it answers False: the kept index lets
        # go of the pages few lookups touched (index_cache.py)
        self.looked_up: Callable[[int], bool] | None = None

    def _count(self, ids: int) -> None:
        if self.looked_up is not None and not self.looked_up(ids):
            self.looked_up = None

    def __len__(self) -> int:
        return len(self.flags)

    def _candidates(self, blob_id: bytes) -> tuple[int, int, int]:
        """Where the keys of `blob_id`'s prefix start, where they end at the latest, and the prefix."""
        shift = self.shift
        whole = int.from_bytes(blob_id[:8], "big")
        prefix = whole >> shift
        slot = whole >> self.directory_shift
        end = self.directory[slot + 1]
        return bisect.bisect_left(self.keys, prefix << shift, self.directory[slot], end), end, prefix

    def positions(self, blob_id: bytes) -> Iterator[int]:
        """Entries holding `blob_id`: usually zero or one."""
        if not self.flags:
            return
        if self.looked_up is not None:
            self._count(1)
        at, end, prefix = self._candidates(blob_id)
        keys, shift = self.keys, self.shift
        mask = (1 << shift) - 1
        while at < end and keys[at] >> shift == prefix:
            i = keys[at] & mask
            if self.ids[i * 32 : (i + 1) * 32] == blob_id:
                yield i
            at += 1

    def sole_position(self, blob_id: bytes) -> int:
        """`positions` when there is one: that entry, else NONE or SEVERAL (a restore asks this of
        every blob it reads: two generators per id were a sixth of its planning threads' time)."""
        if not self.flags:
            return NONE
        if self.looked_up is not None:
            self._count(1)
        at, end, prefix = self._candidates(blob_id)
        keys, shift, ids = self.keys, self.shift, self.ids
        mask = (1 << shift) - 1
        found = NONE
        while at < end and keys[at] >> shift == prefix:
            i = keys[at] & mask
            if ids[i * 32 : (i + 1) * 32] == blob_id:
                if found != NONE:
                    return SEVERAL
                found = i
            at += 1
        return found

    def first(self, blob_id: bytes) -> int | None:
        """The first of `positions`."""
        return self.firsts((blob_id,))[0]

    def firsts(self, blob_ids: Iterable[bytes]) -> list[int | None]:
        """The first entry holding each id (None: none does), in one call: check asks it of the
        content of every file, and three Python calls per id were a third of its time at a
        million blobs."""
        return self._firsts(blob_ids, _NO_PACKS, stop_at_missing=False)

    def has_live(self, blob_id: bytes, pending: set[int]) -> bool:
        """Whether `blob_id` has an entry in a pack not in `pending`."""
        return self._firsts((blob_id,), pending, stop_at_missing=True)[0] is not None

    def has_all_live(self, blob_ids: Iterable[bytes], pending: set[int]) -> bool:
        """Whether every id has an entry in a pack not in `pending`, in one call: the lookups of
        every unchanged file of an incremental backup."""
        return None not in self._firsts(blob_ids, pending, stop_at_missing=True)

    def _firsts(
        self, blob_ids: Iterable[bytes], pending: AbstractSet[int], *, stop_at_missing: bool
    ) -> list[int | None]:
        """`positions` inlined: for each id its first entry in a pack not in `pending`, or None
        (the list ends at the first None with `stop_at_missing`)."""
        if self.looked_up is not None:
            blob_ids = list(blob_ids)
            self._count(len(blob_ids))
        keys, ids, packs_offsets = self.keys, self.ids, self.packs_offsets
        if not keys:
            missing: list[int | None] = [None for _ in blob_ids]
            return missing[:1] if stop_at_missing else missing
        directory, directory_shift = self.directory, self.directory_shift
        shift = self.shift
        mask = (1 << shift) - 1
        bisect_left, from_bytes = bisect.bisect_left, int.from_bytes
        found: list[int | None] = []
        for blob_id in blob_ids:
            whole = from_bytes(blob_id[:8], "big")
            prefix = whole >> shift
            slot = whole >> directory_shift
            end = directory[slot + 1]
            at = bisect_left(keys, prefix << shift, directory[slot], end)
            while at < end and keys[at] >> shift == prefix:
                i = keys[at] & mask
                if ids[i * 32 : (i + 1) * 32] == blob_id and (packs_offsets[i] >> 32) not in pending:
                    found.append(i)
                    break
                at += 1
            else:
                found.append(None)
                if stop_at_missing:
                    break
        return found

    def distinct(self) -> Iterator[tuple[bytes, int]]:
        """Each id once, with its first entry, in key order (where the copies of an id are adjacent)."""
        keys, ids, shift = self.keys, self.ids, self.shift
        mask = (1 << shift) - 1
        run_prefix = -1
        run: set[bytes] = set()  # the ids seen under the current prefix (almost always one)
        for key in keys:
            at = key & mask
            blob_id = bytes(ids[at * 32 : (at + 1) * 32])
            if key >> shift != run_prefix:
                run_prefix, run = key >> shift, set()
            if blob_id not in run:
                run.add(blob_id)
                yield blob_id, at


class _Builder:
    """Collects entries in flat arrays, then sorts only the search keys."""

    def __init__(self) -> None:
        self.base = _SortedBase()
        self.prefixes = array("Q")
        self.ids = bytearray()
        self.packs_offsets = array("Q")
        self.lengths = array("I")
        self.raw_lengths = array("I")
        self.flags = bytearray()

    def add(self, number: int, blobs: list[PackBlob]) -> None:
        high = number << 32
        from_bytes = int.from_bytes
        self.prefixes.extend([from_bytes(b.id[:8], "big") for b in blobs])
        self.ids += b"".join([b.id for b in blobs])
        self.packs_offsets.extend([high | b.offset for b in blobs])
        self.lengths.extend([b.length for b in blobs])
        self.raw_lengths.extend([b.raw_length for b in blobs])
        self.flags.extend([(b.type << 1) | b.compressed for b in blobs])

    def add_packed(self, entries: dict[bytes, int]) -> None:
        """Entries in the packed form of the session's dict (`BlobIndex.add`)."""
        from_bytes = int.from_bytes
        self.prefixes.extend([from_bytes(blob_id[:8], "big") for blob_id in entries])
        self.ids += b"".join(entries)
        packed = list(entries.values())
        self.packs_offsets.extend([((p >> 98) << 32) | ((p >> 66) & _B32) for p in packed])
        self.lengths.extend([(p >> 34) & _B32 for p in packed])
        self.raw_lengths.extend([(p >> 2) & _B32 for p in packed])
        self.flags.extend([p & 3 for p in packed])

    def build(self) -> _SortedBase:
        base = self.base
        base.ids, base.packs_offsets, base.flags = self.ids, self.packs_offsets, self.flags
        base.lengths, base.raw_lengths = self.lengths, self.raw_lengths
        n = len(base.flags)
        shift = base.shift = max(1, n.bit_length())
        # sorted a bucket (top 8 bits) at a time: one sorted list of every key cost ~80 B per blob at
        # its peak, the buckets cost 8 B per blob and one small list at a time
        buckets = [array("Q") for _ in range(256)]
        for i, prefix in enumerate(self.prefixes):
            buckets[prefix >> 56].append(((prefix >> shift) << shift) | i)
        del self.prefixes
        keys = array("Q")
        for bucket in buckets:
            keys.extend(sorted(bucket))
        base.keys = keys
        # a directory slot per 2-4 keys (at most 64Ki slots: 256 KiB); its bits are the top of a
        # key's prefix part, so the keys of one id never straddle two slots
        bits = min(16, max(1, n.bit_length() - 2), 64 - shift)
        base.directory_shift = 64 - bits
        directory = array("I", [0]) * ((1 << bits) + 1)
        for slot in range(1, 1 << bits):
            directory[slot] = bisect.bisect_left(keys, slot << base.directory_shift)
        directory[1 << bits] = n
        base.directory = directory
        return base


class _Segments:
    """A session's frozen entries: sorted segments, and a Bloom filter of their ids (two bits per
    id, from id bytes 8..16: ids are keyed hashes) so that a lookup of a new blob, the usual one in
    a backup, bisects none of them. Immutable once published (`frozen` makes the next)."""

    def __init__(self, parts: list[_SortedBase] | None = None, bits: bytearray | None = None) -> None:
        self.parts = parts or []
        self._bits = bits or bytearray(1)
        self._mask = len(self._bits) * 8 - 1

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def holding(self, blob_id: bytes) -> list[_SortedBase]:
        """The segments that may hold `blob_id` (none when the filter says none does)."""
        if not self.parts:
            return self.parts
        h, mask, bits = int.from_bytes(blob_id[8:16], "little"), self._mask, self._bits
        low, high = h & mask, (h >> 32) & mask
        if bits[low >> 3] >> (low & 7) & 1 and bits[high >> 3] >> (high & 7) & 1:
            return self.parts
        return []

    def frozen(self, entries: dict[bytes, int]) -> _Segments:
        """These segments and one more of `entries`; the filter (2 MiB at first) grows to keep 12 to
        24 bits per id (a false positive in at most ~2.5 % of lookups), rebuilt when it does."""
        builder = _Builder()
        builder.add_packed(entries)
        parts = [*self.parts, builder.build()]
        size = 1 << max(24, (12 * sum(len(part) for part in parts)).bit_length())
        if size // 8 > len(self._bits):
            bits, fill = bytearray(size // 8), parts
        else:
            bits, fill = self._bits, parts[-1:]  # only set bits: readers of the old one see no change
        mask, from_bytes = size - 1, int.from_bytes
        for part in fill:
            ids = part.ids
            for at in range(8, len(ids), 32):
                h = from_bytes(ids[at : at + 8], "little")
                low, high = h & mask, (h >> 32) & mask
                bits[low >> 3] |= 1 << (low & 7)
                bits[high >> 3] |= 1 << (high & 7)
        return _Segments(parts, bits)


class BlobIndex:
    """Thread-safe map of blob ids to their location; a blob in several packs prefers a live pack."""

    def __init__(self) -> None:
        self._base = _SortedBase()
        # added after the bulk load (this session's packs): the newest in a dict, the others in
        # sorted segments (SEGMENT_BLOBS); one tuple, swapped whole, so a reader without the lock
        # finds every entry in the one or the other
        self._top: tuple[dict[bytes, int], _Segments] = ({}, _Segments())
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
        builder = _Builder()
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

    def _sorted_copies(self, segments: _Segments, blob_id: bytes) -> Iterator[tuple[_SortedBase, int]]:
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

    def _from_base(self, base: _SortedBase, at: int) -> BlobLocation:
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
            only: tuple[_SortedBase, int] | None = None
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
