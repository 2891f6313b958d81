"""The bulk entries of the blob index (index.py): flat arrays built once from index files, sorted by
a 64-bit key.

The sort key is the top bits of the id, the low bits the entry's position: about 57 bytes per blob
(32-byte id, 8-byte key, 8-byte pack/offset, 4+4 bytes lengths, 1 byte flags) and no Python object
per blob, so memory neither fragments nor grows by the ~360 B per blob a dict of bytes keys
measured. Lookups are one C-level bisect, over the few keys a directory of their top bits leaves
(at most 256 KiB), plus a 32-byte comparison. The session's frozen segments (index_segments.py)
share the layout; BlobIndex is the front over both.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from typing import NamedTuple, TypeAlias

from shadowvault.repo.format import PackBlob

_B32 = (1 << 32) - 1
_NO_PACKS: frozenset[int] = frozenset()
NONE, SEVERAL = -1, -2  # `sole_position` of an id with no entry, and with more than one

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


class SortedBase:
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


class SortedBuilder:
    """Collects entries in flat arrays, then sorts only the search keys."""

    def __init__(self) -> None:
        self.base = SortedBase()
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

    def build(self) -> SortedBase:
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
