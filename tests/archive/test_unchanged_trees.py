"""A directory found as the parent snapshot has it is that snapshot's tree again, taken over unencoded.

What a user checks: the tree ids (an unchanged directory keeps its id, so `diff` and dedup see it
unchanged), that a change still reaches every directory above it, and that a parent tree that is
not what this backup would write (a name twice, crafted) is never taken over.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from shadowvault.archive.live_devices import live_devices
from shadowvault.archive.walker import Archiver, Source, WalkStats
from shadowvault.repo.repository import Repository
from shadowvault.repo.tree import Tree
from tests.archive.helpers import new_repo, restore
from tests.fixtures.loopfs import LoopFs


class _CountingRepository:
    """The repository, counting the trees a backup encodes and stores."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self.trees_written: list[list[bytes]] = []

    def save_tree(self, tree: Tree) -> bytes:
        self.trees_written.append([node.name for node in tree.nodes])
        return self._repo.save_tree(tree)

    def __getattr__(self, name: str) -> object:
        return getattr(self._repo, name)


def _backup(repo: Repository, src: Path, parent: bytes | None = None) -> tuple[bytes, list[list[bytes]]]:
    """The snapshot's root tree id and the trees the walk wrote (the directories above `src`
    included: each holds the one name below it)."""
    counting = _CountingRepository(repo)
    raw = os.fsencode(src)
    root = Archiver(counting, stats=WalkStats()).archive([Source(raw, raw)], parent)  # type: ignore[arg-type]
    repo.flush()
    return root, counting.trees_written


def _above(src: Path) -> list[list[bytes]]:
    """The trees of the directories above `src`, from the deepest: each names the one below."""
    return [[os.fsencode(part)] for part in reversed(src.parts[1:])]


def _subtree(repo: Repository, tree_id: bytes, *names: bytes) -> bytes:
    for name in names:
        node = next(n for n in repo.load_tree(tree_id).nodes if n.name == name)
        assert node.subtree is not None
        tree_id = node.subtree
    return tree_id


def _source(src: Path) -> None:
    for directory in ("a/b", "c/d", "e"):
        (src / directory).mkdir(parents=True)
    for name in ("a/one", "a/b/two", "c/three", "c/d/four", "e/five", "six"):
        (src / name).write_bytes(name.encode() * 100)


def test_a_no_change_backup_writes_no_tree_and_keeps_every_id(tmp_path: Path):
    src = tmp_path / "src"
    _source(src)
    repo = new_repo(tmp_path / "repo")
    first, written = _backup(repo, src)
    assert len(written) == 6 + len(_above(src))  # src, its five directories and those above it
    again, written = _backup(repo, src, first)
    names = [os.fsencode(part) for part in src.parts[1:]]
    assert _subtree(repo, again, *names) == _subtree(repo, first, *names)
    # the directories above src are written again only where they changed (other tests write in /tmp)
    assert all(tree in _above(src) for tree in written)


def test_a_change_writes_the_trees_above_it_and_keeps_the_others(tmp_path: Path):
    src = tmp_path / "src"
    _source(src)
    repo = new_repo(tmp_path / "repo")
    first, _ = _backup(repo, src)
    (src / "a" / "b" / "two").write_bytes(b"changed")
    second, written = _backup(repo, src, first)
    # a/b, a, src and the directories above it
    assert written == [[b"two"], [b"b", b"one"], [b"a", b"c", b"e", b"six"], *_above(src)]
    names = [os.fsencode(part) for part in src.parts[1:]]
    assert _subtree(repo, second, *names, b"c") == _subtree(repo, first, *names, b"c")
    assert _subtree(repo, second, *names, b"a", b"b") != _subtree(repo, first, *names, b"a", b"b")
    (src / "c" / "d" / "new").write_bytes(b"new")  # a new entry is a change of its directory
    third, written = _backup(repo, src, second)
    assert written == [[b"four", b"new"], [b"d", b"three"], [b"a", b"c", b"e", b"six"], *_above(src)]
    assert _subtree(repo, third, *names, b"a") == _subtree(repo, second, *names, b"a")


def _replaced(repo: Repository, tree_id: bytes, names: list[bytes], nodes: list) -> bytes:
    """A root tree id whose directory at `names` holds `nodes`, the trees above it rewritten."""
    if not names:
        return repo.save_tree(Tree(nodes=nodes))
    tree = repo.load_tree(tree_id)
    node = next(n for n in tree.nodes if n.name == names[0])
    assert node.subtree is not None
    node.subtree = _replaced(repo, node.subtree, names[1:], nodes)
    return repo.save_tree(tree)


def test_a_parent_tree_naming_an_entry_twice_is_not_taken_over(tmp_path: Path):
    src = tmp_path / "src"
    _source(src)
    repo = new_repo(tmp_path / "repo")
    first, _ = _backup(repo, src)
    names = [os.fsencode(part) for part in src.parts[1:]]
    nodes = repo.load_tree(_subtree(repo, first, *names)).nodes
    crafted = _replaced(repo, first, names, [nodes[0], *nodes])  # "a" twice, the rest as found
    again, written = _backup(repo, src, crafted)
    assert _subtree(repo, again, *names) == _subtree(repo, first, *names) != _subtree(repo, crafted, *names)
    assert written == [[b"a", b"c", b"e", b"six"], *_above(src)]  # the subdirectories taken over
    assert [node.name for node in repo.load_tree(_subtree(repo, again, *names)).nodes] == [
        b"a",
        b"c",
        b"e",
        b"six",
    ]


def test_a_volume_read_from_another_snapshot_keeps_its_trees(tmp_path: Path, btrfs: LoopFs):
    """Two btrfs snapshots that exist at once have st_devs of their own: an unchanged volume read
    from the newer one is the same trees, none written again, those holding a hard-linked file
    too (it records the live volume's device), and a restore links its names again."""
    vol, snaps = btrfs.mount / "vol", btrfs.mount / "snaps"
    subprocess.run(["btrfs", "subvolume", "create", vol], check=True, capture_output=True)
    snaps.mkdir()
    _source(vol)
    os.link(vol / "c" / "three", vol / "c" / "d" / "three-again")
    for name in ("first", "second"):
        subprocess.run(
            ["btrfs", "subvolume", "snapshot", "-r", vol, snaps / name], check=True, capture_output=True
        )
    assert os.lstat(snaps / "first").st_dev != os.lstat(snaps / "second").st_dev
    repo = new_repo(tmp_path / "repo")

    def backup(snapshot: str, parent: bytes | None = None) -> tuple[bytes, list[list[bytes]]]:
        counting = _CountingRepository(repo)
        source = Source(os.fsencode(vol), os.fsencode(snaps / snapshot))
        root = Archiver(counting, stats=WalkStats()).archive([source], parent)  # type: ignore[arg-type]
        repo.flush()
        return root, counting.trees_written

    first, _ = backup("first")
    second, written = backup("second", first)
    names = [os.fsencode(part) for part in vol.parts[1:]]
    assert _subtree(repo, second, *names) == _subtree(repo, first, *names)
    assert all(tree in _above(vol) for tree in written)  # (other tests write in /tmp meanwhile)
    target = tmp_path / "restored"
    restore(repo, second, target, str(vol))
    linked = os.lstat(target / "c" / "three")
    assert linked.st_nlink == 2 and linked.st_ino == os.lstat(target / "c" / "d" / "three-again").st_ino


def test_a_shadow_records_its_live_volumes_device_unless_names_could_meet(tmp_path: Path, btrfs: LoopFs):
    """Two shadows of one volume, or a shadow of a volume also read live, keep their own devices:
    under one, names of different inodes would be linked on restore."""
    vol, snaps = btrfs.mount / "vol", btrfs.mount / "snaps"
    subprocess.run(["btrfs", "subvolume", "create", vol], check=True, capture_output=True)
    snaps.mkdir()
    for name in ("first", "second"):
        subprocess.run(
            ["btrfs", "subvolume", "snapshot", "-r", vol, snaps / name], check=True, capture_output=True
        )
    raw = {name: os.fsencode(snaps / name) for name in ("first", "second")}
    live, first = os.lstat(vol).st_dev, os.lstat(snaps / "first").st_dev
    vol_raw, other = os.fsencode(vol), os.fsencode(tmp_path)
    assert live_devices([(raw["first"], vol_raw), (other, other)]) == {first: live}
    assert live_devices([(raw["first"], vol_raw), (raw["second"], vol_raw)]) == {}
    assert live_devices([(raw["first"], vol_raw), (vol_raw, vol_raw)]) == {}
    assert live_devices([(raw["first"], os.fsencode(tmp_path / "gone"))]) == {}
