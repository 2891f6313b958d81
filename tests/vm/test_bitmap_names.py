"""Whose a VM backup's dirty bitmap is, and which of them a backup removes (vm/bitmaps.py, no QEMU)."""

from __future__ import annotations

import pytest

from shadowvault.vm.bitmaps import MAX_OWNERS, bitmap_name, owner_of_repository, parse, unwanted

OURS = owner_of_repository("our repository")


def _of(owner: str, day: int, disk: str = "drive0") -> str:
    return bitmap_name(owner, f"202611{day:02d}T120000-abcdef", disk)


def test_a_name_says_which_repository_which_point_in_time_and_which_disk() -> None:
    name = bitmap_name(OURS, "20261125T140312-3f9a1c", "virtio-disk0")
    assert name == f"sv-{OURS}-20261125T140312-3f9a1c-virtio-disk0"
    named = parse(name)
    assert named is not None and (named.owner, named.set_id) == (OURS, "20261125T140312-3f9a1c")
    assert owner_of_repository("our repository") == OURS != owner_of_repository("another one")
    assert parse("sv-20261125T140312-3f9a1c") is not None  # an earlier version's: ours, no owner
    assert parse("backup-tool-bitmap") is None  # not ours
    with pytest.raises(ValueError):
        bitmap_name("", "20261125T140312-3f9a1c", "drive0")


def test_a_backup_removes_its_own_strays_keeps_its_bases_and_others_up_to_the_bound() -> None:
    others = [owner_of_repository(f"repository {n}") for n in range(MAX_OWNERS + 1)]
    base, stray, legacy = _of(OURS, 1), _of(OURS, 2), "sv-20261101T000000-aaaaaa"
    # each other repository backed the disk up on day 10 + n: the oldest ones go first
    theirs = [_of(owner, 10 + n) for n, owner in enumerate(others)]
    names = [base, stray, legacy, "someone-elses", *theirs]
    leftovers, evicted = unwanted(names, OURS, keep={base, legacy})
    assert leftovers == [stray]  # a kept name (a snapshot's base) stays, even of an earlier version
    assert sorted(evicted) == sorted(theirs[: len(theirs) - (MAX_OWNERS - 1)])
    assert unwanted([legacy, *theirs[:2]], OURS, keep=set()) == ([legacy], [])
