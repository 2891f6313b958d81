"""A restore through a writer that cannot work on its target is refused before anything is stopped.

A database bigger than the free space used to stop the application, set its data aside, then fail
file by file ("No space left on device", once per file) and leave a partial copy in the data's
place; a --target-root that is a file passed the dry run.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tests.writers.test_restore_cli import one_line_error, repo_env


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill_until_free(mount: Path, left: int) -> None:
    """Take the free space of `mount` down to about `left` bytes (btrfs reports it loosely: repeat)."""
    for n in range(20):
        if free_bytes(mount) <= left:
            return
        with open(mount / f"filler{n}", "wb") as f:
            os.posix_fallocate(f.fileno(), 0, free_bytes(mount) - left)
        os.sync()
    raise AssertionError(f"{mount} still has {free_bytes(mount)} bytes free")


def test_a_database_bigger_than_the_free_space_is_refused_before_the_restore(btrfs, cli, private_dirs):
    env = repo_env(btrfs.mount / "repo")
    db = btrfs.mount / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (b blob)")
        conn.executemany("insert into t values (randomblob(65536))", [()] * 128)  # 8 MiB
    conn.close()
    done = cli("backup", "--json", "--writer", f"sqlite:{db}", btrfs.mount, env=env)
    assert done.returncode == 0, done.stderr
    before = db.read_bytes()
    fill_until_free(btrfs.mount, 4 << 20)

    for dry in ([], ["--dry-run"]):  # the dry run says what the restore will say
        line = one_line_error(cli("restore", "latest", "--writer", f"sqlite:{db}", *dry, env=env), 1)
        assert line.startswith("shadowvault: error: not enough space to restore sqlite:"), line
        assert "nothing was stopped or changed" in line
    assert db.read_bytes() == before and not list(btrfs.mount.glob("*.pre-restore-*"))


def test_a_target_root_that_is_a_file_is_refused_by_the_dry_run_too(btrfs, cli, private_dirs):
    """The dry run said "1 writer would be restored", the restore "Not a directory" (exit 2)."""
    env = repo_env(btrfs.mount / "repo")
    db = btrfs.mount / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (n int)")
    conn.close()
    assert cli("backup", "--writer", f"sqlite:{db}", btrfs.mount, env=env).returncode == 0
    target = btrfs.mount / "a-file"
    target.write_text("not a directory\n")
    for dry in (["--dry-run"], []):
        line = one_line_error(
            cli("restore", "latest", "--writer", "sqlite", "--target-root", target, *dry, env=env)
        )
        assert line == f"shadowvault: error: --target-root {target} is not a directory", line
