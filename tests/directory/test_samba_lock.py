"""The lock that keeps two recoveries of one DC apart leaves nothing beside the target when it ends,
and a recovery that locked the file a finished one removed locks the new one instead."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import pytest

from shadowvault.directory import samba_staging
from shadowvault.errors import UsageError


def test_the_lock_is_held_for_the_recovery_and_gone_after_it(tmp_path: Path) -> None:
    target = tmp_path / "samba-dc"
    with samba_staging.recovery_lock(str(target)):
        assert os.listdir(tmp_path) == [".samba-dc.shadowvault-lock"]
        with (
            pytest.raises(UsageError, match=r"another recovery into .* is running"),
            samba_staging.recovery_lock(str(target)),
        ):
            pass
    assert os.listdir(tmp_path) == []
    with samba_staging.recovery_lock(str(target)):  # and it can be taken again
        pass
    assert os.listdir(tmp_path) == []


def test_a_recovery_holding_the_removed_file_locks_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a recovery's open and its flock, the one before it ended and removed the file: the
    lock it then gets is on a file with no name, which a third recovery would not see."""
    target = str(tmp_path / "samba-dc")
    lock = tmp_path / ".samba-dc.shadowvault-lock"
    real_flock = fcntl.flock
    replaced = []

    def flock_after_the_name_moved(fd: int, operation: int) -> None:
        if not replaced:  # the first recovery ends now: its file goes, another takes the name
            replaced.append(True)
            lock.unlink()
            lock.write_text("")
        real_flock(fd, operation)

    monkeypatch.setattr(samba_staging.fcntl, "flock", flock_after_the_name_moved)
    with samba_staging.recovery_lock(target):
        held = _open_files()
        assert str(lock) in held and f"{lock} (deleted)" not in held
    assert os.listdir(tmp_path) == []


def _open_files() -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
    return found
