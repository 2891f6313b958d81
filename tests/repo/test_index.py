"""The in-memory index: locations survive the bit packing, and pending packs are never deduplicated."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from shadowvault.repo.format import BlobType, PackBlob
from shadowvault.repo.index import BlobIndex

U32 = st.integers(0, (1 << 32) - 1)


@given(offset=U32, length=U32, raw=U32, blob_type=st.sampled_from(list(BlobType)), compressed=st.booleans())
def test_locations_round_trip(offset, length, raw, blob_type, compressed):
    index = BlobIndex()
    blob_id = os.urandom(32)
    index.add("p" * 64, [PackBlob(int(blob_type), blob_id, offset, length, raw, compressed)])
    loc = index.lookup(blob_id)
    assert (loc.pack, loc.type, loc.offset, loc.length, loc.raw_length, loc.compressed, loc.pending) == (
        "p" * 64, blob_type, offset, length, raw, compressed, False)


def test_pending_packs_are_readable_but_not_deduplicated():
    index = BlobIndex()
    a, b = os.urandom(32), os.urandom(32)
    index.add("old", [PackBlob(0, a, 0, 10, 10, False), PackBlob(0, b, 10, 10, 10, False)], pending=True)
    assert not index.has_blob(a) and index.lookup(a).pending
    index.add("new", [PackBlob(0, a, 0, 10, 10, False)])
    assert index.has_blob(a) and index.lookup(a).pack == "new"
    index.add("old", [PackBlob(0, a, 0, 10, 10, False)], pending=True)  # a later copy keeps the live one
    assert index.lookup(a).pack == "new"
    index.add("old", [], pending=False)  # pending is sticky: another index file cannot clear it
    assert not index.has_blob(b)
