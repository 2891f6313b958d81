"""The index kept built between commands (repo/index_cache.py): a second command reads it instead of
every index file and finds the same blobs where they are; new index files build it again; a kept
file that is damaged or forged is never used; check reads the index files themselves."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from shadowvault.repo import master_index
from shadowvault.repo.format import BlobType, IndexPack, PackBlob
from shadowvault.repo.index import BlobIndex
from shadowvault.repo.index_cache import IndexCache
from shadowvault.repo.prune import prune
from shadowvault.repo.repository import Repository
from tests.repo.helpers import PASSWORD, make_snapshot, restore_all


def _kept(repo: Repository) -> Path:
    cache = IndexCache.for_repository(repo.id, repo._key.id_key)
    assert cache is not None
    return cache.path


def _locations(repo: Repository, ids: dict[str, list[bytes]]) -> dict[bytes, object]:
    return {blob_id: repo.lookup(blob_id) for blob_ids in ids.values() for blob_id in blob_ids}


def _built_from_files(monkeypatch) -> list[str]:
    """Record whether the next index read built from the index files (True) or used the kept one."""
    built: list[str] = []
    real = IndexCache.load

    def load(self: IndexCache):
        found = real(self)
        built.append("kept" if found is not None else "built")
        return found

    monkeypatch.setattr(IndexCache, "load", load)
    return built


def test_a_second_command_reads_the_kept_index_and_finds_every_blob(tmp_path: Path, monkeypatch):
    path = tmp_path / "repo"
    large = os.urandom(3 << 20)
    with Repository.init(path, PASSWORD) as repo:
        sid, ids = make_snapshot(repo, {"a": b"hello", "b": large})
    with Repository.open(path, PASSWORD) as repo:
        first = _locations(repo, ids)
        kept = _kept(repo)
    assert kept.is_file() and kept.stat().st_mode & 0o077 == 0
    assert kept.parent.stat().st_mode & 0o777 == 0o700, "nobody else's business"
    built = _built_from_files(monkeypatch)
    with Repository.open(path, PASSWORD) as repo:
        assert _locations(repo, ids) == first
        assert restore_all(repo, sid)["b"] == large
        assert not repo.has_blob(bytes(32))
    assert built == ["kept"]


def test_index_files_written_since_are_read_on_top_of_it(tmp_path: Path, monkeypatch):
    path = tmp_path / "repo"
    with Repository.init(path, PASSWORD) as repo:
        make_snapshot(repo, {"a": b"one"})
    with Repository.open(path, PASSWORD) as repo:
        assert len(repo.index) > 0  # kept now
        later, ids = make_snapshot(repo, {"c": b"written after the index was kept"})
    built = _built_from_files(monkeypatch)
    with Repository.open(path, PASSWORD) as repo:
        assert restore_all(repo, later)["c"] == b"written after the index was kept"
        assert all(repo.lookup(blob_id) is not None for blob_id in ids["c"])
    assert built == ["kept"]
    monkeypatch.setattr(master_index, "KEPT_ADDED_BYTES", 0)  # any file more is too much: built anew
    with Repository.open(path, PASSWORD) as repo:
        assert restore_all(repo, later)["c"] == b"written after the index was kept"
    with Repository.open(path, PASSWORD) as repo:
        assert len(repo.index) > 0
    assert built == ["kept", "kept", "kept"]
    assert len(_kept_names(path)) == len(list((path / "index").iterdir())), "kept again, with every file"


def _kept_names(path: Path) -> frozenset[str]:
    with Repository.open(path, PASSWORD) as repo:
        cache = IndexCache.for_repository(repo.id, repo._key.id_key)
        assert cache is not None
        found = cache.load()
    assert found is not None
    return found[1]


def test_a_writer_that_added_much_keeps_the_index_for_the_next_command(tmp_path: Path, monkeypatch):
    """After a first backup (or any write that adds more than a command reads on top of the kept
    index) the index is kept when the writer closes: the next command maps it, builds nothing, and
    finds every blob, the new ones too."""
    path = tmp_path / "repo"
    with Repository.init(path, PASSWORD) as repo:
        make_snapshot(repo, {"a": b"one"})
    monkeypatch.setattr(master_index, "KEPT_ADDED_BYTES", 0)  # any index file more is much
    with Repository.open(path, PASSWORD) as repo:
        assert len(repo.index) > 0
        later, ids = make_snapshot(repo, {"c": os.urandom(1 << 20)})
    assert _kept_names(path) == frozenset(f"index/{name}" for name in os.listdir(path / "index"))
    builds: list[int] = []
    real = BlobIndex.from_packs.__func__  # type: ignore[attr-defined]

    def counted(cls: type[BlobIndex], packs: Iterable[IndexPack]) -> BlobIndex:
        builds.append(1)
        return real(cls, packs)

    monkeypatch.setattr(BlobIndex, "from_packs", classmethod(counted))
    with Repository.open(path, PASSWORD) as repo:
        assert all(repo.lookup(blob_id) is not None for blob_id in ids["c"])
        assert len(restore_all(repo, later)["c"]) == 1 << 20
    assert builds == [], "the kept index was used as it is"


def test_a_kept_index_never_brings_back_blobs_whose_index_file_is_gone(tmp_path: Path):
    """Prune removes index files with the packs they list: a kept index built with them is not used
    (a blob of a removed pack must look missing, so the next backup stores it again)."""
    path = tmp_path / "repo"
    with Repository.init(path, PASSWORD) as repo:
        _, first = make_snapshot(repo, {"a": b"first"})
    names_before = set(os.listdir(path / "index"))
    with Repository.open(path, PASSWORD) as repo:
        _, second = make_snapshot(repo, {"b": b"second, in an index file of its own"})
    with Repository.open(path, PASSWORD) as repo:
        assert len(repo.index) > 0  # kept, built from both
    for name in names_before:
        (path / "index" / name).unlink()
    with Repository.open(path, PASSWORD) as repo:
        assert all(repo.lookup(blob_id) is None for blob_id in first["a"])
        assert all(repo.lookup(blob_id) is not None for blob_id in second["b"])


def test_a_prune_keeps_the_index_it_leaves_for_the_next_command(tmp_path: Path, monkeypatch):
    """Prune replaces index files: the command after it maps the index prune kept (at a million
    blobs, building it took seconds of that command), finds the blobs that stayed, and not those
    that went."""
    path = tmp_path / "repo"
    with Repository.init(path, PASSWORD, pack_size=512 << 10) as repo:
        gone, gone_ids = make_snapshot(repo, {"old": os.urandom(600_000)})
        kept, _ = make_snapshot(repo, {"new": os.urandom(600_000)})
        repo.remove_snapshot(gone)
    with Repository.open(path, PASSWORD, write=True, kind="prune") as repo:
        assert prune(repo).packs_deleted > 0
    assert _kept_names(path) == frozenset(f"index/{name}" for name in os.listdir(path / "index"))
    built = _built_from_files(monkeypatch)
    with Repository.open(path, PASSWORD) as repo:
        assert all(repo.lookup(blob_id) is None for blob_id in gone_ids["old"])
        assert len(restore_all(repo, kept)["new"]) == 600_000
    assert built == ["kept"]


def test_a_damaged_or_forged_kept_index_is_never_used(tmp_path: Path, monkeypatch):
    path = tmp_path / "repo"
    with Repository.init(path, PASSWORD) as repo:
        sid, ids = make_snapshot(repo, {"a": b"hello"})
        kept = _kept(repo)
    kept.unlink()  # kept while the repository was empty: built from its one index file next
    with Repository.open(path, PASSWORD) as repo:
        first = _locations(repo, ids)
    raw = bytearray(kept.read_bytes())
    built = _built_from_files(monkeypatch)
    for damage in (
        lambda b: b.__setitem__(len(b) - 100, b[len(b) - 100] ^ 1),  # a flipped bit
        lambda b: b.__delitem__(slice(len(b) // 2, None)),  # cut short
        lambda b: b.__setitem__(slice(len(b) - 32, None), bytes(32)),  # no key, no valid tag
    ):
        changed = bytearray(raw)
        damage(changed)
        kept.write_bytes(bytes(changed))
        with Repository.open(path, PASSWORD) as repo:
            assert _locations(repo, ids) == first
            assert restore_all(repo, sid)["a"] == b"hello"
        assert kept.read_bytes() == raw, "built again and kept again"
    assert built == ["built"] * 3
    with Repository.open(path, PASSWORD) as other_key:  # a kept file is bound to its repository
        other = IndexCache(kept.parent, b"\x01" * 32)
        assert other_key.id and other.load() is None


def test_a_fifo_in_place_of_the_kept_index_is_passed_over(tmp_path: Path):
    """The cache directory is the user's, not ours alone: a FIFO there blocked every command that
    reads the index (ls, restore, backup) for ever."""
    path = tmp_path / "repo"
    with Repository.init(path, PASSWORD) as repo:
        sid, _ = make_snapshot(repo, {"a": b"hello"})
        kept = _kept(repo)
    kept.unlink()
    os.mkfifo(kept)
    with Repository.open(path, PASSWORD) as repo:
        assert restore_all(repo, sid)["a"] == b"hello"


def test_check_reads_the_index_files_not_the_kept_index(tmp_path: Path, cli):
    path = tmp_path / "repo"
    with Repository.init(path, PASSWORD) as repo:
        make_snapshot(repo, {"a": b"hello"})
    env = {"SHADOWVAULT_REPOSITORY": str(path), "SHADOWVAULT_PASSWORD": PASSWORD}
    assert cli("check", env=env).returncode == 0
    with Repository.open(path, PASSWORD) as repo:
        assert len(repo.index) > 0 and _kept(repo).is_file()
    damaged = sorted((path / "index").iterdir())[0]
    damaged.write_bytes(b"not an index file")
    found = cli("check", env=env)
    assert found.returncode == 1
    assert "repair index" in found.stdout + found.stderr


def _mapped_kib(path: Path) -> int:
    """What of `path` this process has mapped in (its resident pages), from /proc/self/smaps."""
    resident, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):  # a mapping's first line, its file last
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            resident += int(line.split()[1])
    return resident


def test_a_few_lookups_into_a_large_kept_index_map_little_of_it(tmp_path: Path):
    """A small backup into a repository of many blobs looks up a few thousand new ones: the kept
    index's pages they touched are let go as it goes (its 4.8 MB of keys were mapped whole), and a
    command that looks up many keeps them."""
    packs = [
        IndexPack(
            id=os.urandom(32).hex(),
            size=0,
            blobs=[PackBlob(BlobType.DATA, os.urandom(32), n * 100, 100, 90, True) for n in range(1000)],
        )
        for _ in range(600)
    ]
    cache = IndexCache(tmp_path, b"\x02" * 32)
    cache.save(["a"], BlobIndex.from_packs(packs))
    with open(cache.path, "rb") as kept:  # written back, as a later command finds it
        os.fsync(kept.fileno())
    found = cache.load()
    assert found is not None
    index, built_from = found
    assert built_from == {"a"} and len(index) == 600_000
    new_ids = [os.urandom(32) for _ in range(2000)]
    assert not any(index.has_blob(blob_id) for blob_id in new_ids)
    assert _mapped_kib(cache.path) <= 2048  # of 4.8 MB of keys (and 19 MB of ids)
    old = [blob.id for pack in packs for blob in pack.blobs[::20]]
    assert all(index.lookup(blob_id) is not None for blob_id in old)
    assert index.has_all(old)
    assert _mapped_kib(cache.path) > 4096, "many lookups keep the pages they touch"
