"""Paths inside a target root resolve like a chroot: nothing a restore writes can land outside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadowvault.components.base import check_target_root
from shadowvault.components.layout import resolve_in_root
from shadowvault.errors import NotFoundError, UsageError


def test_resolution_stays_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "abs").symlink_to("/usr")  # absolute: the target's /usr
    (root / "up").symlink_to("../../../../..")
    (root / "loop").symlink_to("loop")
    assert resolve_in_root(root, "/lib/x") == root / "usr/lib/x"
    assert resolve_in_root(root, "abs/lib/y") == root / "usr/lib/y"
    assert resolve_in_root(root, "../../etc/passwd") == root / "etc/passwd"
    assert resolve_in_root(root, "up/etc/shadow") == root / "etc/shadow"
    assert resolve_in_root(root, "lib") == root / "lib"  # the last component is never followed
    with pytest.raises(UsageError, match="too many symbolic links"):
        resolve_in_root(root, "loop/x")


def test_target_root_checks(tmp_path: Path) -> None:
    afile = tmp_path / "f"
    afile.write_text("")
    with pytest.raises(UsageError, match="is not a directory"):
        check_target_root(afile, yes_really=False)
    with pytest.raises(NotFoundError, match="does not exist"):
        check_target_root(tmp_path / "missing", yes_really=False)
    with pytest.raises(UsageError, match="without --yes-really"):
        check_target_root("/", yes_really=False)
    assert check_target_root("/", yes_really=False, dry_run=True) == Path("/")  # a preview writes nothing
    assert check_target_root(tmp_path, yes_really=False) == tmp_path
