"""The view's parts on a real repository: ranged reads load only the blobs they need, the top
levels' names, and the snapshot list following the repository."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from shadowvault.mount.catalog import Catalog, Link, SnapshotDir, SnapshotFilter, VirtualDir
from shadowvault.mount.content import Blobs, FileContent
from shadowvault.mount.names import entry_name, short_ids
from shadowvault.mount.trees import TreeCache
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Tree
from shadowvault.repo.zero_blobs import ZeroBlobs
from tests.archive.helpers import FAST_KDF, PASSWORD, archive, new_repo


class CountingRepository:
    """A repository whose blob loads are counted (the blobs a read needed)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.loaded: list[bytes] = []

    @property
    def zero_blobs(self) -> ZeroBlobs:
        return self.repo.zero_blobs

    def blob_size(self, blob_id: bytes) -> int | None:
        return self.repo.blob_size(blob_id)

    def load_blob(self, blob_id: bytes) -> bytes:
        self.loaded.append(blob_id)
        return self.repo.load_blob(blob_id)

    def reload_index(self) -> None:
        self.repo.reload_index()


def test_a_read_loads_only_the_blobs_that_hold_its_range(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(5).randbytes(24 << 20)
    (src / "big").write_bytes(data)
    repo = Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF)
    with repo:
        root, _ = archive(repo, src)
        (node,) = [n for n in repo.load_tree(root).nodes]
        while node.type == "dir":
            (node,) = repo.load_tree(node.subtree).nodes  # type: ignore[arg-type]
        assert len(node.content) > 8, "the test needs a file of many blobs"
        counting = CountingRepository(repo)
        content = FileContent(Blobs(counting), node.content)
        assert counting.loaded == [] and content.size == len(data), "opening reads no data"
        ends = []
        position = 0
        for blob_id in node.content:
            position += repo.blob_size(blob_id)  # type: ignore[operator]
            ends.append(position)
        for offset, length, wanted in [
            (ends[5] + 10, 100, [node.content[6]]),  # inside one blob
            (ends[2] - 50, 100, node.content[2:4]),  # across a boundary
            (0, 1, [node.content[0]]),
            (len(data) - 1, 4096, [node.content[-1]]),
        ]:
            counting.loaded.clear()
            assert content.read(offset, length) == data[offset : offset + length]
            assert counting.loaded == wanted, (offset, length)
        counting.loaded.clear()
        assert content.read(ends[5] + 20, 100) == data[ends[5] + 20 : ends[5] + 120]
        assert counting.loaded == [], "a blob read a moment ago comes from the cache"
        assert content.read(len(data), 10) == b"" and content.read(len(data) + 5, 10) == b""


def test_short_ids_and_entry_names():
    ids = ["abcdef0123456789", "abcdef0199999999", "12345678aaaa"]
    assert short_ids(ids) == {
        "abcdef0123456789": "abcdef012",
        "abcdef0199999999": "abcdef019",
        "12345678aaaa": "12345678",
    }
    assert [entry_name(n) for n in ["a/b", "", ".", "..", "latest", "ok"]] == [
        "a_b",
        "_",
        "_.",
        "_..",
        "_latest",
        "ok",
    ]


def _snapshot(repo: Repository, when: float, host: str, tags: list[str]) -> str:
    empty = repo.save_tree(Tree(nodes=[]))  # a snapshot names a root tree (one without is damaged)
    return repo.save_snapshot(Snapshot(time=when, host=host, tags=tags, paths=["/x"], tree=empty))


def test_the_top_levels_follow_the_repository(tmp_path: Path):
    with new_repo(tmp_path / "repo") as repo:
        first = _snapshot(repo, 1_700_000_000, "web/1", ["daily", "latest"])
        second = _snapshot(repo, 1_700_000_100, "db", ["daily"])
        clock = [0.0]
        catalog = Catalog(repo, refresh_seconds=5, clock=lambda: clock[0])
        root = catalog.root(fresh=True)
        snapshots = root.entries["snapshots"]
        assert isinstance(snapshots, VirtualDir)
        name1, name2 = (f"2023-11-14T22:13:20Z_{first[:8]}", f"2023-11-14T22:15:00Z_{second[:8]}")
        assert sorted(snapshots.entries) == sorted([name1, name2, "latest"])
        assert snapshots.entries["latest"] == Link(name2, 1_700_000_100)
        assert isinstance(snapshots.entries[name1], SnapshotDir)
        hosts = root.entries["hosts"]
        assert isinstance(hosts, VirtualDir) and sorted(hosts.entries) == ["db", "web_1"]
        web = hosts.entries["web_1"]
        assert isinstance(web, VirtualDir)
        assert web.entries[name1] == Link(f"../../snapshots/{name1}", 1_700_000_000)
        tags = root.entries["tags"]
        assert isinstance(tags, VirtualDir) and sorted(tags.entries) == ["_latest", "daily"]
        daily = tags.entries["daily"]
        assert isinstance(daily, VirtualDir) and daily.entries["latest"] == Link(name2, 1_700_000_100)
        ids = root.entries["ids"]
        assert isinstance(ids, VirtualDir) and ids.entries[second[:8]] == Link(
            f"../snapshots/{name2}", 1_700_000_100
        )

        repo.remove_snapshot(first)
        third = _snapshot(repo, 1_700_000_200, "db", [])
        assert catalog.root(fresh=True) is root, "not re-read before the interval passed"
        clock[0] = 5.0
        assert catalog.root(fresh=False) is root, "only a fresh look re-reads"
        fresh = catalog.root(fresh=True)
        snapshots = fresh.entries["snapshots"]
        assert isinstance(snapshots, VirtualDir)
        assert name1 not in snapshots.entries and f"2023-11-14T22:16:40Z_{third[:8]}" in snapshots.entries
        hosts = fresh.entries["hosts"]
        assert isinstance(hosts, VirtualDir) and sorted(hosts.entries) == ["db"]


def test_a_damaged_snapshot_file_is_left_out(tmp_path: Path):
    with new_repo(tmp_path / "repo") as repo:
        good = _snapshot(repo, 1_700_000_000, "h", [])
        bad = _snapshot(repo, 1_700_000_100, "h", [])
    path = tmp_path / "repo" / "snapshots" / bad
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        snapshots = Catalog(repo, refresh_seconds=0).root().entries["snapshots"]
        assert isinstance(snapshots, VirtualDir)
        assert sorted(snapshots.entries) == sorted([f"2023-11-14T22:13:20Z_{good[:8]}", "latest"])


def test_directory_listings_are_kept_within_a_bound(tmp_path: Path):
    src = tmp_path / "src"
    for d in range(5):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(10):
            (src / f"d{d}" / f"f{i}").write_bytes(b"%d" % i)
    with new_repo(tmp_path / "repo") as repo:
        root, _ = archive(repo, src)
        trees = TreeCache(repo, limit=25)
        parts = [p.encode() for p in str(src).strip("/").split("/")]
        for d in range(5):
            node = trees.resolve(root, [*parts, b"d%d" % d, b"f3"])
            assert node is not None and node.type == "file" and node.size == 1
        assert sum(len(entries) for entries in trees._dirs.values()) <= 25
        with pytest.raises(OSError) as missing:
            trees.resolve(root, [*parts, b"d1", b"nope"])
        assert missing.value.errno == errno.ENOENT
        with pytest.raises(OSError) as through_a_file:
            trees.resolve(root, [*parts, b"d1", b"f1", b"x"])
        assert through_a_file.value.errno == errno.ENOTDIR


def test_the_view_shows_only_the_snapshots_asked_for(tmp_path: Path):
    with new_repo(tmp_path / "repo") as repo:
        web = _snapshot(repo, 1_700_000_000, "web", ["daily"])
        _snapshot(repo, 1_700_000_100, "db", ["daily"])
        _snapshot(repo, 1_700_000_200, "web", [])
        shown = SnapshotFilter(hosts=("web",), tags=("daily",))
        snapshots = Catalog(repo, refresh_seconds=0, shown=shown).root().entries["snapshots"]
        assert isinstance(snapshots, VirtualDir)
        assert sorted(snapshots.entries) == sorted([f"2023-11-14T22:13:20Z_{web[:8]}", "latest"])


def test_holes_read_as_zeros_without_loading_a_blob(tmp_path: Path):
    """A sparse file's holes are zero runs in its content: the view serves them from memory, and a
    read across a hole's edges gets the data around it (through a real mount: test_mount.py's 1 GiB
    file is mostly holes)."""
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(9)
    head, middle = rng.randbytes(1 << 20), rng.randbytes(3 << 20)
    size = (48 << 20) + 4096  # ends in a hole
    with open(src / "sparse", "wb") as f:
        f.write(head)
        f.seek(20 << 20)
        f.write(middle)
        f.truncate(size)
    original = (src / "sparse").read_bytes()
    repo = Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF)
    with repo:
        root, _ = archive(repo, src)
        (node,) = repo.load_tree(root).nodes
        while node.type == "dir":
            (node,) = repo.load_tree(node.subtree).nodes  # type: ignore[arg-type]
        assert any(repo.zero_blobs.size_of(b) is not None for b in node.content), "holes are zero runs"
        counting = CountingRepository(repo)
        content = FileContent(Blobs(counting), node.content)
        assert content.size == size
        for offset, length in [(2 << 20, 4 << 20), (30 << 20, 1), (size - 5000, 10_000)]:
            assert (
                content.read(offset, length)
                == original[offset : offset + length]
                == bytes(min(length, size - offset))
            )
        assert counting.loaded == [], "a hole loads nothing"
        for offset, length in [((1 << 20) - 100, 200), ((23 << 20) - 100, 200), ((20 << 20) - 7, 14)]:
            assert content.read(offset, length) == original[offset : offset + length], (offset, length)
