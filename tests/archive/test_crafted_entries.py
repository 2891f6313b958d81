"""Entries of a crafted tree that no filesystem call takes as they are (found by an audit): each is
an error naming its path or a warning, never an "unexpected" failure, never a default the snapshot
did not give; the other entries are restored."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from shadowvault.archive.restore import Restorer
from shadowvault.repo.repository import Repository
from shadowvault.repo.tree import Node
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.archive.test_hostile_restore import Crafter


def test_device_nodes_without_a_number_or_beyond_linux_are_errors(tmp_path: Path) -> None:
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        c = Crafter(repo)
        root = c.root(
            Node(name=b"no-number", type="blockdev", mode=0o600),  # was: made as device 0,0
            Node(name=b"huge", type="chardev", mode=0o600, rdev=2**64 - 1),  # was: "Invalid argument"
            Node(name=b"null", type="chardev", mode=0o666, rdev=os.makedev(1, 3)),
            c.file(b"good", b"good", mode=0o644),
        )
        target = tmp_path / "target"
        stats = Restorer(repo, target).restore(root)
    errors = dict(stats.errors)
    assert sorted(errors) == [b"/huge", b"/no-number"]
    assert "without its device number" in errors[b"/no-number"]
    assert "beyond what Linux holds" in errors[b"/huge"]
    assert sorted(os.listdir(target)) == ["good", "null"]
    assert stat.S_ISCHR(os.lstat(target / "null").st_mode) and os.lstat(
        target / "null"
    ).st_rdev == os.makedev(1, 3)


def test_an_xattr_name_holding_a_nul_is_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        c = Crafter(repo)
        xattrs = {"user.a\0b": b"x", "user.fine": b"kept"}
        root = c.root(c.file(b"f", b"data", mode=0o644, xattrs=xattrs))
        target = tmp_path / "target"
        stats = Restorer(repo, target).restore(root)
    assert stats.errors == []  # was: "unexpected ValueError: embedded null byte"
    assert os.getxattr(target / "f", "user.fine") == b"kept" and (target / "f").read_bytes() == b"data"
    assert "NUL byte" in caplog.text
