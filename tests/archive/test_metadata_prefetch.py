"""The metadata prefetch (archive/metadata_prefetch.py): a process that reads the trees' metadata
ahead of a backup's walk. What matters to a user: it never outlives the backup, never leaves its
roots' filesystems or follows a symlink, and a backup is the same with it or without it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from shadowvault.archive import prefetch_walk
from shadowvault.archive.metadata_prefetch import MAX_QUEUED, PREFETCH_ENV, MetadataPrefetch
from shadowvault.archive.prefetch_walk import PARENT_CHECK_EVERY, prefetch
from tests.fixtures.loopfs import LoopFs, loop_filesystem


def _listed(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The directories the prefetch lists, in order."""
    listed: list[bytes] = []
    real = os.scandir

    def scandir(path: bytes) -> Any:
        listed.append(path)
        return real(path)

    monkeypatch.setattr(prefetch_walk.os, "scandir", scandir)
    return listed


def test_it_walks_depth_first_in_name_order_within_each_filesystem(
    ext4: LoopFs, monkeypatch: pytest.MonkeyPatch
):
    root = ext4.mount / "src"
    for name in ("b/inner", "a", "c"):
        (root / name).mkdir(parents=True)
    (root / "a" / "file").write_bytes(b"x")
    (root / "loop").symlink_to(root)  # followed, it would never end
    (root / "d").mkdir()
    with loop_filesystem("ext4") as other:
        os.mkdir(root / "d" / "mounted")
        subprocess.run(["mount", "--bind", str(other.mount), str(root / "d" / "mounted")], check=True)
        try:
            (other.mount / "elsewhere").mkdir()
            listed = _listed(monkeypatch)
            prefetch([bytes(root)], os.getppid())
            monkeypatch.undo()
        finally:
            subprocess.run(["umount", str(root / "d" / "mounted")], check=True)
    base = bytes(root)
    assert listed == [base, base + b"/a", base + b"/b", base + b"/b/inner", base + b"/c", base + b"/d"]


def test_it_stops_once_the_backup_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for part in ("a", "b"):
        (tmp_path / part).mkdir()
        for n in range(PARENT_CHECK_EVERY + 1):
            (tmp_path / part / f"f{n}").touch()
    listed = _listed(monkeypatch)
    prefetch([bytes(tmp_path)], parent=os.getppid() + 1_000_000)  # not this process's parent
    assert listed == [bytes(tmp_path), bytes(tmp_path / "a")], "it noticed after a directory's worth"


def test_it_ends_with_the_walk_and_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for n in range(2000):
        (tmp_path / f"d{n % 50}").mkdir(exist_ok=True)
        (tmp_path / f"d{n % 50}" / f"f{n}").touch()
    running = MetadataPrefetch([bytes(tmp_path)])
    pid = running.pid
    assert pid is not None and Path(f"/proc/{pid}").exists()
    running.stop()
    assert not Path(f"/proc/{pid}").exists(), "stopped and reaped"
    running.stop()  # once more: nothing to do
    monkeypatch.setenv(PREFETCH_ENV, "0")
    assert MetadataPrefetch([bytes(tmp_path)]).pid is None


def _tree(root: Path, directories: int = 30, files: int = 20) -> None:
    for d in range(directories):
        sub = root / f"d{d:02}" / "inner"
        sub.mkdir(parents=True)
        for f in range(files):
            (sub.parent / f"f{f}").write_bytes(b"x" * f)
        (sub / "link").symlink_to("../f1")
        os.setxattr(sub.parent / "f1", "user.note", b"kept")


def _counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """[listings the walk took from the prefetch, directories it listed itself], the prefetch
    let finish before the walk asks (a walk of a small tree ends before the process starts)"""
    counts = [0, 0]
    real = MetadataPrefetch.listing

    def listing(self: MetadataPrefetch, directory: bytes) -> Any:
        _wait_done(self)
        found = real(self, directory)
        counts[found is None] += 1
        return found

    monkeypatch.setattr(MetadataPrefetch, "listing", listing)
    return counts


def _wait_done(prefetch: MetadataPrefetch) -> None:
    """Let the prefetch finish, its records read as they come (a full pipe would hold it up)."""
    process = prefetch._process
    deadline = time.monotonic() + 60
    while process is not None and process.poll() is None and time.monotonic() < deadline:
        prefetch._receive()
        time.sleep(0.005)
    prefetch._receive()


def test_the_walk_takes_the_prefetched_listings_and_stores_what_it_would_store_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from shadowvault.archive.patterns import PathFilter
    from tests.archive.helpers import archive, new_repo

    src = tmp_path / "src"
    _tree(src)
    repo = new_repo(tmp_path / "repo")

    def src_tree(**kw: Any) -> bytes:
        """The tree of `src` (the directories above it, /tmp among them, change as they like)."""
        tree_id, stats = archive(repo, src, **kw)
        assert stats.errors == []
        for name in src.parts[1:]:
            node = next(n for n in repo.load_tree(tree_id).nodes if n.name == os.fsencode(name))
            tree_id = node.subtree
        return tree_id

    monkeypatch.setenv(PREFETCH_ENV, "0")
    alone = src_tree()
    monkeypatch.setenv(PREFETCH_ENV, "1")
    counts = _counted(monkeypatch)
    assert src_tree() == alone
    assert counts == [61, 0]  # src, its 30 directories and their inner ones
    leave_out = PathFilter(excludes=[str(src / "d0*")])  # ten directories whose listings it passes over
    excluded = src_tree(path_filter=leave_out)
    assert excluded != alone and counts == [61 + 41, 0]
    monkeypatch.setenv(PREFETCH_ENV, "0")
    assert src_tree(path_filter=leave_out) == excluded


def test_a_listing_is_given_once_in_walk_order_and_never_waited_for(tmp_path: Path):
    _tree(tmp_path, directories=3, files=2)
    running = MetadataPrefetch([bytes(tmp_path)])
    try:
        _wait_done(running)
        base = bytes(tmp_path)
        listing = running.listing(base + b"/d01")  # those before it are passed over (left out)
        assert listing is not None
        assert [(name, kind) for name, kind, _ in listing] == [
            (b"f0", "file"),
            (b"f1", "file"),
            (b"inner", "dir"),
        ]
        st = listing[1][2]
        assert st is not None and (st.st_size, st.st_ino) == (1, os.lstat(tmp_path / "d01" / "f1").st_ino)
        assert running.listing(base + b"/d00") is None  # passed over: the walk lists it itself
        assert running.listing(base + b"/d01") is None  # given once
        assert running.listing(base + b"/d01/zzz") is None  # never listed: the later ones are kept
        assert running.listing(base + b"/d02/inner") is not None
        assert running.listing(base + b"/d02") is None
    finally:
        running.stop()
    assert running.listing(bytes(tmp_path)) is None  # stopped: nothing more


def test_listings_kept_for_later_are_bounded_and_none_is_lost(tmp_path: Path):
    names = [f"d{d:03}" for d in range(120)]  # their records fit the pipe (~0.8 MiB)
    for name in names:
        (tmp_path / name).mkdir()
        for f in range(50):
            (tmp_path / name / f"a-rather-long-file-name-of-forty-bytes-{f:02}").touch()
    running = MetadataPrefetch([bytes(tmp_path)])
    try:
        running._process.wait(timeout=60)  # type: ignore[union-attr]
        assert running.listing(b"/") is None  # before them all: every one is kept for later
        assert MAX_QUEUED <= len(running._records) <= MAX_QUEUED + 16  # the rest waits in the pipe
        given = [running.listing(bytes(tmp_path / name)) for name in names]
        assert all(listing is not None and len(listing) == 50 for listing in given)
    finally:
        running.stop()
