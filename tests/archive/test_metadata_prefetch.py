"""The metadata prefetch (archive/metadata_prefetch.py): a process that reads the trees' metadata
ahead of a backup's walk. What matters to a user: it never outlives the backup, never leaves its
roots' filesystems or follows a symlink, and a backup is the same with it or without it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shadowvault.archive import prefetch_walk
from shadowvault.archive.metadata_prefetch import PREFETCH_ENV, MetadataPrefetch
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
