"""A file whose parent-snapshot node is still exactly its own takes that node over, uncaptured.

What a user checks: an incremental backup records what a full capture would (the same trees with the
shortcut as without it, after every kind of change a file can see), and any difference at all sends
the file the full way.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import msgspec
import pytest

from shadowvault.archive import metadata, walker
from shadowvault.archive.entry_stat import ListedStat
from shadowvault.archive.parent_reuse import taken_over
from shadowvault.repo.repository import Repository
from shadowvault.repo.tree import Node
from tests.archive.helpers import archive, new_repo
from tests.archive.test_metadata_roundtrip import OTHER_GID, OTHER_UID, build_metadata_tree


def _listed(path: Path) -> ListedStat:
    """The file's stat as the metadata prefetch hands it to the walk."""
    st = os.lstat(path)
    return ListedStat(*(getattr(st, field) for field in ListedStat._fields))


def _recorded(path: Path) -> Node:
    """The file's node as a backup stores it."""
    node = metadata.capture(os.fsencode(path), os.lstat(path), b"f")
    node.content = [bytes(32)]
    return node


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    os.setxattr(path, "user.note", b"kept")
    os.chown(path, OTHER_UID, OTHER_GID)  # owners with no name here: the ids alone tell them apart
    return path


def test_the_node_of_an_untouched_file_is_taken_over_as_it_stands(plain: Path):
    old = _recorded(plain)
    assert taken_over(old, _listed(plain)) is old
    assert taken_over(old, os.lstat(plain)) is old  # the walk's own lstat() when nothing was prefetched


def test_a_file_seen_on_another_device_is_taken_over_as_it_stands(plain: Path):
    """A btrfs snapshot shows the same inodes under an st_dev of its own: a file with one link
    records no device, so which one it is seen on changes nothing."""
    old = _recorded(plain)
    assert old.device == 0
    assert taken_over(old, _listed(plain)._replace(st_dev=12345)) is old


def test_a_node_recorded_with_its_device_is_taken_over_without_it(plain: Path):
    """Snapshots of earlier versions recorded every entry's device."""
    old = msgspec.structs.replace(_recorded(plain), device=os.lstat(plain).st_dev)
    node = taken_over(old, _listed(plain))
    assert node is not None and node.device == 0
    assert msgspec.structs.replace(node, device=old.device) == old


@pytest.mark.parametrize(
    "field, change",
    [
        ("st_ino", lambda v: v + 1),
        ("st_ctime_ns", lambda v: v + 1),
        ("st_mtime_ns", lambda v: v + 1),
        ("st_size", lambda v: v + 1),
        ("st_nlink", lambda v: 2),
        ("st_uid", lambda v: v + 1),
        ("st_gid", lambda v: v + 1),
        ("st_mode", lambda v: v ^ 0o4000),  # setuid
        ("st_mode", lambda v: (v & 0o7777) | 0o120000),  # a symlink now
        ("st_blocks", lambda v: 0),  # sparse now
    ],
)
def test_any_difference_sends_the_file_the_full_way(plain: Path, field: str, change):
    old = _recorded(plain)
    listed = _listed(plain)
    assert taken_over(old, listed._replace(**{field: change(getattr(listed, field))})) is None


@pytest.mark.parametrize(
    "field, value",
    [
        ("error", "not read at backup"),
        ("nlink", 2),
        ("atime_ns", 1),  # recorded with atimes: this walk records the mtime there
        ("user", "someone"),
        ("subtree", bytes(32)),
        ("link_target", b"elsewhere"),
        ("orig_inode", 7),  # read from a copy: its original's identity is not this file's
        ("acl_users", {OTHER_UID: "someone"}),
        ("xattrs", {"system.posix_acl_access": b"\x02\x00\x00\x00"}),  # user names looked up again
    ],
)
def test_a_node_holding_what_a_capture_would_not_give_is_not_taken_over(plain: Path, field: str, value):
    old = msgspec.structs.replace(_recorded(plain), **{field: value})
    assert taken_over(old, _listed(plain)) is None


def _src_tree(repo: Repository, root: bytes, src: Path) -> bytes:
    """The tree id of `src` in a snapshot of it (the /tmp above it changes while other tests run)."""
    tree_id = root
    for part in src.parts[1:]:
        node = next(n for n in repo.load_tree(tree_id).nodes if n.name == os.fsencode(part))
        assert node.subtree is not None
        tree_id = node.subtree
    return tree_id


def _change_every_way(src: Path) -> None:
    """What happens to files between two backups, one kind each."""
    os.utime(src / "plain", ns=(1, 2))
    os.chmod(src / "setuid", 0o755)
    os.chown(src / "owned", OTHER_UID + 1, -1)
    subprocess.run(["setfattr", "-n", "user.colour", "-v", "red", src / "xattr"], check=True)
    subprocess.run(["setfacl", "-m", f"u:{OTHER_UID}:r", src / "acl"], check=True)
    with open(src / "defacl" / "inner", "ab") as f:
        f.write(b" and grew")
    (src / "replaced").write_bytes(b"old")
    os.replace(src / "replaced", src / "plain-copy")
    os.truncate(src / "sparse-late", 1 << 20)


@pytest.mark.parametrize("changed", [False, True], ids=["unchanged", "changed every way"])
def test_an_incremental_backup_records_what_a_full_capture_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changed: bool
):
    src = tmp_path / "src"
    build_metadata_tree(src)
    (src / "plain-copy").write_bytes(b"plain file\n")
    (src / "sparse-late").write_bytes(b"data")
    repo = new_repo(tmp_path / "repo")
    first, _ = archive(repo, src)
    if changed:
        _change_every_way(src)

    took: list[Node] = []

    def counted(old: Node, st) -> Node | None:
        node = taken_over(old, st)
        took.extend([node] if node is not None else [])
        return node

    monkeypatch.setattr(walker, "taken_over", counted)
    fast, fast_stats = archive(repo, src, first)
    monkeypatch.setattr(walker, "taken_over", lambda old, st: None)
    full, full_stats = archive(repo, src, first)

    assert took, "no node was taken over"
    assert _src_tree(repo, fast, src) == _src_tree(repo, full, src)
    assert (fast_stats.files_unmodified, fast_stats.files_changed, fast_stats.files_new) == (
        full_stats.files_unmodified,
        full_stats.files_changed,
        full_stats.files_new,
    )
    if not changed:
        assert _src_tree(repo, fast, src) == _src_tree(repo, first, src)
