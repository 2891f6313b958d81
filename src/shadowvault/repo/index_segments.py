"""A session's added blobs once frozen (index.py's dict on top fills them): sorted segments in
index_sorted.py's layout, 57 B per blob where the dict took ~160 (a first backup of a million files
held 150 MB of dict), and a Bloom filter that keeps them off the path of a lookup of a new blob."""

from __future__ import annotations

from shadowvault.repo.index_sorted import SortedBase, SortedBuilder


class Segments:
    """A session's frozen entries: sorted segments, and a Bloom filter of their ids (two bits per
    id, from id bytes 8..16: ids are keyed hashes) so that a lookup of a new blob, the usual one in
    a backup, bisects none of them. Immutable once published (`frozen` makes the next)."""

    def __init__(self, parts: list[SortedBase] | None = None, bits: bytearray | None = None) -> None:
        self.parts = parts or []
        self._bits = bits or bytearray(1)
        self._mask = len(self._bits) * 8 - 1

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def holding(self, blob_id: bytes) -> list[SortedBase]:
        """The segments that may hold `blob_id` (none when the filter says none does)."""
        if not self.parts:
            return self.parts
        h, mask, bits = int.from_bytes(blob_id[8:16], "little"), self._mask, self._bits
        low, high = h & mask, (h >> 32) & mask
        if bits[low >> 3] >> (low & 7) & 1 and bits[high >> 3] >> (high & 7) & 1:
            return self.parts
        return []

    def frozen(self, entries: dict[bytes, int]) -> Segments:
        """These segments and one more of `entries`; the filter (2 MiB at first) grows to keep 12 to
        24 bits per id (a false positive in at most ~2.5 % of lookups), rebuilt when it does."""
        builder = SortedBuilder()
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
        return Segments(parts, bits)
