"""The repository over the in-memory backend: nothing in the engine depends on local files.

The same round trips as on disk (save, reopen, restore, check, forget, prune, repair index), and
reading the blobs of one pack with one read, on both backends.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shadowvault.errors import IntegrityError, PartialFailure, RepositoryError, WrongPasswordError
from shadowvault.repo.backend import Backend
from shadowvault.repo.backend_local import LocalBackend
from shadowvault.repo.backend_memory import MemoryBackend
from shadowvault.repo.check import check
from shadowvault.repo.format import BlobType
from shadowvault.repo.pack import pack_name
from shadowvault.repo.prune import prune
from shadowvault.repo.repair import repair_index
from shadowvault.repo.repository import Repository
from tests.repo.helpers import PASSWORD, make_snapshot, random_files, restore_all

SMALL_PACKS = 256 << 10


def test_backup_reopen_check_forget_prune_round_trip() -> None:
    storage = MemoryBackend()
    kept_files = random_files(3, 300_000, seed=1)
    with Repository.init(storage, PASSWORD, pack_size=SMALL_PACKS) as repo:
        gone, _ = make_snapshot(repo, random_files(4, 300_000, seed=2))
        kept, _ = make_snapshot(repo, kept_files)
    packs_before = len(list(storage.list("data/")))

    with Repository.open(storage, PASSWORD) as repo:
        assert [sid for sid, _ in repo.list_snapshots()] == [gone, kept]
        assert restore_all(repo, kept) == {**kept_files, "sub/inner": b"inner"}
        assert check(repo, read_data_fraction=1.0).ok
        repo.remove_snapshot(repo.resolve_snapshot_id(gone[:8]))

    with Repository.open(storage, PASSWORD, write=True, kind="prune") as repo:
        result = prune(repo)
    assert result.packs_deleted > 0 and result.packs_pending == 0
    assert len(list(storage.list("data/"))) < packs_before
    assert list(storage.list("sessions/")) == []

    with Repository.open(storage, PASSWORD) as repo:
        assert restore_all(repo, kept) == {**kept_files, "sub/inner": b"inner"}
        report = check(repo, read_data_fraction=1.0)
        assert report.ok and report.unreferenced_blobs == 0


def test_a_lost_index_file_is_rebuilt_from_the_pack_headers() -> None:
    storage = MemoryBackend()
    files = random_files(2, 200_000, seed=3)
    with Repository.init(storage, PASSWORD, pack_size=SMALL_PACKS) as repo:
        snapshot_id, _ = make_snapshot(repo, files)
    for info in storage.list("index/"):
        storage.remove(info.name)
    with Repository.open(storage, PASSWORD) as repo:
        assert not check(repo).ok
    with Repository.open(storage, PASSWORD, write=True, kind="repair") as repo:
        repair_index(repo)
    with Repository.open(storage, PASSWORD) as repo:
        assert restore_all(repo, snapshot_id) == {**files, "sub/inner": b"inner"}
        assert check(repo).ok


def test_opening_with_a_wrong_password_or_creating_twice_is_refused() -> None:
    storage = MemoryBackend()
    Repository.init(storage, PASSWORD).close()
    with pytest.raises(WrongPasswordError):
        Repository.open(storage, "not the password")
    with pytest.raises(RepositoryError, match="already a repository"):
        Repository.init(storage, PASSWORD)


def test_a_damaged_config_is_replaced_by_repair_config() -> None:
    storage = MemoryBackend()
    with Repository.init(storage, PASSWORD) as repo:
        snapshot_id, _ = make_snapshot(repo, {"a": b"some bytes"})
    storage.save("config", storage.load("config")[:-1] + b"\0")
    with pytest.raises(IntegrityError, match="repair config"):
        Repository.open(storage, PASSWORD)
    assert Repository.repair_config(storage, PASSWORD) is not None
    with Repository.open(storage, PASSWORD) as repo:
        assert restore_all(repo, snapshot_id)["a"] == b"some bytes"


# ---------------------------------------------------------------- one read per pack, both backends

BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "local": lambda tmp: LocalBackend.create(tmp / "repo"),
    "memory": lambda tmp: MemoryBackend(),
}


@pytest.fixture(params=sorted(BACKENDS))
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield BACKENDS[request.param](tmp_path)


def _blobs_by_pack(
    repo: Repository, count: int, size: int = 8000
) -> tuple[dict[bytes, bytes], dict[str, list[bytes]]]:
    contents = {}
    for n in range(count):
        data = random.Random(n).randbytes(size + n)  # incompressible: 40 of them fill several packs
        contents[repo.save_blob(BlobType.DATA, data)] = data
    repo.flush()
    by_pack: dict[str, list[bytes]] = {}
    for blob_id in contents:
        location = repo.lookup(blob_id)
        assert location is not None
        by_pack.setdefault(location.pack, []).append(blob_id)
    return contents, by_pack


def test_the_blobs_of_a_pack_are_read_together_and_verified(storage: Backend) -> None:
    with Repository.init(storage, PASSWORD, pack_size=64 << 10) as repo:
        contents, by_pack = _blobs_by_pack(repo, 40)
        assert len(by_pack) > 1
        for pack_id, ids in by_pack.items():
            loaded = list(repo.load_pack_blobs(pack_id, reversed(ids)))
            assert [b.error for b in loaded] == [None] * len(ids)
            assert {b.id: b.data for b in loaded} == {i: contents[i] for i in ids}
            offsets = [loc.offset for b in loaded if (loc := repo.lookup(b.id)) is not None]
            assert offsets == sorted(offsets)  # in pack order


def test_a_damaged_blob_of_a_pack_read_is_reported_and_recorded(storage: Backend) -> None:
    with Repository.init(storage, PASSWORD, pack_size=1 << 20) as repo:
        contents, by_pack = _blobs_by_pack(repo, 6)
        (pack_id, ids), *_ = by_pack.items()
        victim = ids[2]
        location = repo.lookup(victim)
        assert location is not None
        raw = bytearray(storage.load(pack_name(pack_id)))
        raw[location.offset + 20] ^= 0xFF
        storage.save(pack_name(pack_id), bytes(raw))

        loaded = {b.id: b for b in repo.load_pack_blobs(pack_id, ids)}
        assert isinstance(loaded[victim].error, IntegrityError) and loaded[victim].data is None
        assert all(loaded[i].data == contents[i] for i in ids if i != victim)
        assert repo.damage.is_damaged(pack_id, victim)
        assert not repo.has_blob(victim)  # the next backup stores it again


def test_a_blob_no_longer_in_that_pack_is_read_from_where_it_is(storage: Backend) -> None:
    with Repository.init(storage, PASSWORD) as repo:
        contents, by_pack = _blobs_by_pack(repo, 3)
        (pack_id, ids), *_ = by_pack.items()
        loaded = list(repo.load_pack_blobs("0" * 64, ids))
        assert {b.id: b.data for b in loaded} == {i: contents[i] for i in ids}
        assert pack_id != "0" * 64


class CountingBackend(MemoryBackend):
    """The in-memory backend, counting the range reads of packs."""

    def __init__(self) -> None:
        super().__init__()
        self.pack_reads = 0

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if name.startswith("data/"):
            self.pack_reads += 1
        return super().load(name, offset, length)


def test_a_pack_is_read_once_unless_a_large_gap_splits_the_read() -> None:
    storage = CountingBackend()
    with Repository.init(storage, PASSWORD, pack_size=8 << 20) as repo:
        contents, by_pack = _blobs_by_pack(repo, 30, size=100_000)
        assert len(by_pack) == 1
        (pack_id, ids), *_ = by_pack.items()
        offsets = {i: loc.offset for i in ids if (loc := repo.lookup(i)) is not None}
        ids.sort(key=offsets.__getitem__)
        storage.pack_reads = 0
        assert [b.data for b in repo.load_pack_blobs(pack_id, ids)] == [contents[i] for i in ids]
        assert storage.pack_reads == 1
        storage.pack_reads = 0
        ends = [ids[0], ids[-1]]  # ~2.9 MB apart: reading through would cost more than a second read
        assert [b.data for b in repo.load_pack_blobs(pack_id, ends)] == [contents[i] for i in ends]
        assert storage.pack_reads == 2


class KeyKeepingBackend(MemoryBackend):
    """The in-memory backend, failing every removal of a key file (a storage down at that moment)."""

    def remove(self, name: str) -> None:
        if name.startswith("keys/"):
            raise RepositoryError(f"cannot remove {name}: the storage is down")
        super().remove(name)


def test_a_password_change_whose_old_key_stays_says_the_new_password_works() -> None:
    """The new key is written first; when the old one cannot be removed after that, the error says the
    password did change (it read as a failed change, the storage's error alone)."""
    storage = KeyKeepingBackend()
    Repository.init(storage, PASSWORD).close()
    with Repository.open(storage, PASSWORD) as repo:
        (old,) = [k["id"] for k in repo.list_keys()]
        with pytest.raises(PartialFailure) as failed:
            repo.change_password("new password")
        new = repo.key_name or ""
    assert str(failed.value) == (
        f"the new password works (key {new[5:13]}), but the old key {old[:8]} is still there: cannot remove"
        f" keys/{old}: the storage is down; `shadowvault key remove {old[:8]}` removes it"
    )
    for password in (PASSWORD, "new password"):
        Repository.open(storage, password).close()
