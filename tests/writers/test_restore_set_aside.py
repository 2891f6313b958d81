"""A restore through a writer replaces what is there, as its plan says, and says where the old data went.

Writers whose pre_restore does not move the data themselves (SQLite, external writers) relied on the
file restore, which leaves existing files alone: the plan said "set aside and replace", the restore
said "restored", and the old file stayed (SQLite's restore even failed on a -wal the backup did not
have). And a restore stopped while files were laid down (Ctrl-C, SIGTERM) said only "terminated by
SIGTERM", not where the data it had set aside was.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from shadowvault.archive.restore import Restorer
from shadowvault.errors import WriterError
from shadowvault.interrupts import StoppedBySignal, Terminated
from shadowvault.jobs.restore_writer import WriterRestoreRequest, run_writer_restore
from shadowvault.repo.repository import Repository
from shadowvault.shadow.writers.sqlite import SqliteWriter
from tests.archive.helpers import PASSWORD
from tests.writers.test_restore_cli import backup, of_type, repo_env


def make_db(path: Path, rows: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("create table if not exists t (n int)")
        conn.executemany("insert into t values (?)", [(n,) for n in range(rows)])
    conn.close()


def count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
        return conn.execute("select count(*) from t").fetchone()[0]
    finally:
        conn.close()


def test_sqlite_restore_replaces_one_database_and_sets_a_stale_wal_aside(btrfs, cli, private_dirs):
    env = repo_env(btrfs.mount / "repo")
    data = btrfs.mount / "data"
    data.mkdir()
    a, b = data / "a.db", data / "b.db"
    make_db(a, 10)
    make_db(b, 10)
    done = cli("backup", "--json", "--writer", f"sqlite:{a}", "--writer", f"sqlite:{b}", data, env=env)
    assert done.returncode == 0, done.stderr
    make_db(a, 5)  # written after the backup
    make_db(b, 5)
    Path(f"{a}-wal").write_bytes(b"a newer -wal than the backup: never to be replayed into it")

    dry = cli("restore", "latest", "--writer", f"sqlite:{a}", "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    actions = {p["target"]: p["action"] for p in of_type(dry, "writer_plan")[0]["paths"]}
    assert actions == {str(a): "replace", f"{a}-wal": "set_aside"}  # no -shm, -journal: in neither

    done = cli("restore", "latest", "--writer", f"sqlite:{a}", env=env)
    assert done.returncode == 0, done.stderr
    assert count(a) == 10 and count(b) == 15  # a restored, b (not asked for) left alone
    (old,) = data.glob("a.db.pre-restore-*")
    (wal,) = data.glob("a.db-wal.pre-restore-*")
    assert count(old) == 15 and wal.read_bytes().startswith(b"a newer -wal")
    assert str(old) in done.stderr


EXTERNAL = """
from shadowvault import writer_sdk as sdk

class W(sdk.Writer):
    def identify(self, req):
        return [{"name": "data", "paths": self.config["data"], "restore_method": "restore_if_can_replace"}]

    def freeze(self, req):
        pass

    def thaw(self, req):
        pass

sdk.run(W)
"""


def test_external_restore_if_can_replace_replaces_the_files(btrfs, cli, private_dirs):
    env = repo_env(btrfs.mount / "repo")
    app = btrfs.mount / "app"
    (app / "data").mkdir(parents=True)
    (app / "data" / "f.txt").write_text("v1\n")
    script = btrfs.mount / "writer.py"
    script.write_text(EXTERNAL)
    config = private_dirs / "config" / "writers.d" / "app.toml"
    config.write_text(
        f'type = "external"\ncommand = ["{sys.executable}", "{script}"]\npaths = ["{app}"]\n'
        f'[options]\ndata = ["{app / "data"}"]\n'
    )
    config.chmod(0o644)
    snap = backup(cli, env, "app", app)
    (app / "data" / "f.txt").write_text("v2\n")
    (app / "data" / "new.txt").write_text("made after the backup\n")

    done = cli("restore", snap, "--writer", "app", env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (app / "data").iterdir()) == ["f.txt"]
    assert (app / "data" / "f.txt").read_text() == "v1\n"
    (aside,) = app.glob("data.pre-restore-*")
    assert (aside / "f.txt").read_text() == "v2\n" and (aside / "new.txt").exists()


def test_a_restore_stopped_while_laying_down_says_where_the_old_data_went(
    btrfs, cli, private_dirs, monkeypatch
):
    env = repo_env(btrfs.mount / "repo")
    db = btrfs.mount / "app.db"
    make_db(db, 10)
    done = cli("backup", "--json", "--writer", f"sqlite:{db}", btrfs.mount, env=env)
    assert done.returncode == 0, done.stderr
    make_db(db, 5)

    def terminated(self, *args, **kwargs):
        raise Terminated(signal.SIGTERM)  # the service manager stops the restore half-way

    monkeypatch.setattr(Restorer, "restore", terminated)
    repo = Repository.open(env["SHADOWVAULT_REPOSITORY"], PASSWORD)
    try:
        with pytest.raises(Terminated) as stopped:
            run_writer_restore(repo, WriterRestoreRequest("latest", writers=[f"sqlite:{db}"]))
    finally:
        repo.close()
    (aside,) = btrfs.mount.glob("app.db.pre-restore-*")
    assert count(aside) == 15  # the data that was there, kept
    line = str(StoppedBySignal(stopped.value))  # what the command line says, exit 143
    assert line.startswith("terminated by SIGTERM: ") and f"{db} -> {aside}" in line, line
    assert StoppedBySignal(stopped.value).exit_code == 143


def test_a_restore_stopped_in_post_restore_or_failing_there_says_where_the_old_data_went(
    btrfs, cli, private_dirs, monkeypatch
):
    env = repo_env(btrfs.mount / "repo")
    db = btrfs.mount / "app.db"
    make_db(db, 10)
    done = cli("backup", "--json", "--writer", f"sqlite:{db}", btrfs.mount, env=env)
    assert done.returncode == 0, done.stderr

    def interrupted(self, ctx):
        raise KeyboardInterrupt  # Ctrl-C while the writer recovers the restored copy

    monkeypatch.setattr(SqliteWriter, "post_restore", interrupted)
    repo = Repository.open(env["SHADOWVAULT_REPOSITORY"], PASSWORD)
    try:
        with pytest.raises(KeyboardInterrupt) as stopped:
            run_writer_restore(repo, WriterRestoreRequest("latest", writers=[f"sqlite:{db}"]))

        def failing(self, ctx):
            raise WriterError("the copy does not open")

        monkeypatch.setattr(SqliteWriter, "post_restore", failing)
        with pytest.raises(WriterError) as failed:
            run_writer_restore(repo, WriterRestoreRequest("latest", writers=[f"sqlite:{db}"]))
    finally:
        repo.close()
    first, second = sorted(btrfs.mount.glob("app.db.pre-restore-*"))  # two restores, two names
    line = str(StoppedBySignal(stopped.value))
    assert line.startswith("interrupted: writer sqlite:") and f"{db} -> {first}" in line, line
    assert "failed at post_restore: the copy does not open" in str(failed.value)
    assert f"{db} -> {second}" in str(failed.value), failed.value


def test_a_restored_sqlite_database_that_fails_its_integrity_check_fails_the_restore(
    btrfs, cli, private_dirs
):
    """The restore said "restored" whatever the copy held: SQLite's writer checked nothing."""
    env = repo_env(btrfs.mount / "repo")
    db = btrfs.mount / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (n int, s text)")
        conn.execute("create index t_s on t (s)")
        conn.executemany("insert into t values (?, ?)", [(n, f"row {n:06}" * 20) for n in range(2000)])
    conn.close()
    with open(db, "r+b") as f:  # damage the index's pages, as a failing disk would: the header stays
        f.seek(-8 * 4096, os.SEEK_END)
        f.write(b"\xa5" * 4096)
    done = cli("backup", "--writer", f"sqlite:{db}", btrfs.mount, env=env)
    assert done.returncode == 0, done.stderr
    done = cli("restore", "latest", "--writer", f"sqlite:{db}", env=env)
    assert done.returncode == 1, done.stderr
    assert f"failed at post_restore: the restored database {db} " in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
