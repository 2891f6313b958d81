"""The in-memory index: locations survive the bit packing, and pending packs are never deduplicated."""

from __future__ import annotations

import os
import random

from hypothesis import given
from hypothesis import strategies as st

from shadowvault.repo import index as index_module
from shadowvault.repo import index_sorted
from shadowvault.repo.format import BlobType, IndexPack, PackBlob
from shadowvault.repo.index import BlobIndex

U32 = st.integers(0, (1 << 32) - 1)


@given(offset=U32, length=U32, raw=U32, blob_type=st.sampled_from(list(BlobType)), compressed=st.booleans())
def test_locations_round_trip(offset, length, raw, blob_type, compressed):
    index = BlobIndex()
    blob_id = os.urandom(32)
    index.add("p" * 64, [PackBlob(int(blob_type), blob_id, offset, length, raw, compressed)])
    loc = index.lookup(blob_id)
    assert (loc.pack, loc.type, loc.offset, loc.length, loc.raw_length, loc.compressed, loc.pending) == (
        "p" * 64,
        blob_type,
        offset,
        length,
        raw,
        compressed,
        False,
    )


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


@given(
    entries=st.lists(
        st.tuples(
            st.binary(min_size=8, max_size=8),
            st.binary(min_size=24, max_size=24),
            st.integers(0, 5),
            U32,
            U32,
            U32,
            st.booleans(),
        ),
        max_size=200,
    ),
    shared_prefix=st.booleans(),
)
def test_bulk_loaded_index_matches_a_plain_dict(entries, shared_prefix):
    """The sorted compact form answers exactly like a dict, also for ids sharing their first 8 bytes
    and for a blob stored in several packs (a live copy beats a pending one)."""
    from shadowvault.repo.format import IndexPack, Pending

    packs: dict[int, list[PackBlob]] = {}
    expected: dict[bytes, tuple[str, int, bool]] = {}
    for head, tail, pack_no, offset, length, raw, compressed in entries:
        blob_id = (b"\x01" * 8 if shared_prefix else head) + tail
        packs.setdefault(pack_no, []).append(PackBlob(0, blob_id, offset, length, raw, compressed))
    pending_packs = {0, 3}
    for pack_no in sorted(packs):
        for b in packs[pack_no]:
            name, pending = f"{pack_no:064x}", pack_no in pending_packs
            old = expected.get(b.id)
            if old is None or (old[2] and not pending):
                expected[b.id] = (name, b.offset, pending)
    index = BlobIndex.from_packs(
        IndexPack(
            id=f"{n:064x}", size=1, blobs=blobs, pending=Pending(since=0.0) if n in pending_packs else None
        )
        for n, blobs in sorted(packs.items())
    )
    for blob_id, (_name, _offset, pending) in expected.items():
        loc = index.lookup(blob_id)
        assert loc is not None and loc.pending == pending and index.has_blob(blob_id) == (not pending)
        if not pending:
            assert any(b.id == blob_id and b.offset == loc.offset for b in packs[int(loc.pack, 16)])
    assert index.lookup(b"\x02" * 32) is None and not index.has_blob(b"\x01" * 32 + b"x")
    live = [blob_id for blob_id, (_name, _offset, pending) in expected.items() if not pending]
    assert index.has_all(live)
    for blob_id in expected.keys() - set(live):  # every copy pending deletion
        assert not index.has_all([*live, blob_id])


def test_lookups_at_the_edges_of_the_directory():
    """The directory of the keys' top bits narrows every lookup: ids in its first and last slots
    and on either side of a slot's border are found where they are, absent ones are not."""
    from shadowvault.repo.format import IndexPack

    edges = [b"\x00" * 32, b"\xff" * 32, b"\x80" + b"\x00" * 31, b"\x7f" + b"\xff" * 31]
    ids = [os.urandom(32) for _ in range(5000)] + edges
    blobs = [PackBlob(0, blob_id, offset, 1, 1, False) for offset, blob_id in enumerate(ids)]
    index = BlobIndex.from_packs([IndexPack(id="a" * 64, size=1, blobs=blobs)])
    assert index.has_all(ids) and index.has_all([])
    for offset, blob_id in enumerate(ids):
        location = index.lookup(blob_id)
        assert location is not None and location.offset == offset
    absent = [b"\x00" * 31 + b"\x01", b"\xff" * 31 + b"\xfe", b"\x80" + b"\x00" * 30 + b"\x01"]
    assert not any(index.has_blob(blob_id) for blob_id in absent)
    assert not index.has_all([*edges, absent[0]])


def test_every_blob_id_is_listed_once_however_many_copies():
    """check counts blobs from the compact index: a blob stored in two packs (a retried backup, a
    repack) is one blob, and a copy added this session is not listed again."""
    from shadowvault.repo.format import IndexPack

    ids = [os.urandom(32) for _ in range(300)]
    packs = [
        IndexPack(
            id=f"{n:064x}", size=1, blobs=[PackBlob(0, blob_id, 0, 1, 1, False) for blob_id in ids[n::3]]
        )
        for n in range(3)
    ]
    twice = IndexPack(
        id="e" * 64, size=1, blobs=[PackBlob(0, blob_id, 0, 1, 1, False) for blob_id in ids[:50]]
    )
    index = BlobIndex.from_packs([*packs, twice])
    extra = os.urandom(32)
    index.add("f" * 64, [PackBlob(0, ids[7], 0, 1, 1, False), PackBlob(0, extra, 0, 1, 1, False)])
    listed = list(index.blob_ids())
    assert len(listed) == len(set(listed)) == 301
    assert set(listed) == {*ids, extra}
    # the slot the sorted walk gives each bulk blob is the one a lookup gives (check's used bits)
    slotted = list(index.slotted_blob_ids())
    assert [blob_id for blob_id, _ in slotted] == listed
    assert all(slot is None or slot == index.slot(blob_id) for blob_id, slot in slotted)
    assert sum(slot is not None for _, slot in slotted) == 300 - 1  # ids[7] was added on top
    # in one call, as check marks a directory's content: what a lookup of each gives
    asked = [*ids, extra, os.urandom(32)]
    assert index.slots(asked) == [index.slot(blob_id) for blob_id in asked]
    assert index.slots(asked)[-1] is None and index.slots([]) == []


def test_a_sessions_entries_frozen_into_segments_answer_as_the_dict_did(monkeypatch):
    """A long session's blobs leave the dict for sorted segments: every lookup, membership, copy,
    ranking and walk answers as an index built from the same packs."""
    monkeypatch.setattr(index_module, "SEGMENT_BLOBS", 16)
    rng = random.Random(7)
    packs = [
        IndexPack(
            id=f"{n:064x}",
            size=1,
            blobs=[
                PackBlob(n % 2, rng.randbytes(32), at * 100, 100 + at, 200 + at, bool(at % 2))
                for at in range(rng.randrange(1, 12))
            ],
            pending=1.0 if n % 9 == 4 else None,
        )
        for n in range(60)
    ]
    session, built = BlobIndex(), BlobIndex.from_packs(packs)
    for pack in packs:
        assert session.add_pack(pack)
    assert len(session._top[1].parts) > 5  # frozen
    ids = [b.id for pack in packs for b in pack.blobs]
    assert len(session) == len(built) == len(ids)
    for blob_id in [*ids, os.urandom(32)]:
        assert session.lookup(blob_id) == built.lookup(blob_id)
        assert session.has_blob(blob_id) == built.has_blob(blob_id)
    assert session.has_all(ids[:40]) == built.has_all(ids[:40])
    live = [b.id for pack in packs if pack.pending is None for b in pack.blobs]
    assert session.has_all(live) and not session.has_all([*live, os.urandom(32)])
    assert sorted(session.blob_ids()) == sorted(built.blob_ids()) == sorted(ids)

    # a copy stored again (a healed blob) in a later pack: both copies found, the intact one first
    first = packs[0].blobs[0]
    copy = PackBlob(first.type, first.id, 7, first.length, first.raw_length, first.compressed)
    session.add_pack(IndexPack(id="f" * 64, size=1, blobs=[copy]))
    session.mark_damaged(packs[0].id)
    found = session.locations(first.id)
    assert [loc.pack for loc in found] == ["f" * 64, packs[0].id] and found[0].offset == 7
    assert session.has_blob(first.id) and session.lookup(first.id).offset == 7
    assert sorted(session.blob_ids()) == sorted(ids)


def test_a_restores_lookup_of_the_bulk_entries_ranks_only_a_blob_with_several_copies():
    """With nothing added this session, a lookup reads the bulk entries directly: the one copy of
    a blob, nothing for an unknown one, and a blob in two packs still ranked (live before pending)."""
    from shadowvault.repo.format import Pending

    once, twice, absent = os.urandom(32), os.urandom(32), os.urandom(32)
    index = BlobIndex.from_packs(
        [
            IndexPack(
                id="a" * 64,
                size=1,
                blobs=[PackBlob(0, once, 5, 1, 1, False), PackBlob(0, twice, 9, 1, 1, False)],
            ),
            IndexPack(
                id="b" * 64, size=1, blobs=[PackBlob(0, twice, 7, 1, 1, False)], pending=Pending(since=0.0)
            ),
        ]
    )
    base = index._base
    assert base.sole_position(absent) == index_sorted.NONE
    assert base.sole_position(twice) == index_sorted.SEVERAL
    assert base.sole_position(once) >= 0
    assert index.lookup(once).offset == 5 and index.lookup(absent) is None
    best = index.lookup(twice)
    assert (best.pack, best.offset, best.pending) == ("a" * 64, 9, False)
