"""A backup cancelled while the SQLite or the Redis writer waits for its application.

SQLite: the writer waits for a lock another connection holds (prepare_snapshot's TRUNCATE
checkpoint behind an open read transaction; freeze's BEGIN IMMEDIATE behind another BEGIN
IMMEDIATE), which SQLite's busy handler would wait out for the freeze timeout (60 s) whatever
interrupt it was sent. Redis: the writer polls for its BGSAVE, made slow by the server's
`rdb-key-save-delay`. Either way the run ends `cancelled` at once, the writer holds nothing
afterwards (the database is free to write and checkpoint, Redis's AOF rewrite setting is back),
and no snapshot is saved. Ctrl-C of a backup without the daemon ends a waiting freeze as promptly.
Real databases on a btrfs loop filesystem, a real daemon and redis-server.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.client import Client
from tests.fixtures import servers as S
from tests.fixtures.loopfs import LoopFs, loop_filesystem
from tests.service.daemon import running_daemon
from tests.service.run_waits import BOUND, assert_cancelled
from tests.writers.test_sql_cancel import PROMPT, _backup, _cancel_once, _snapshots

SETTLE = 1.0  # seconds for a writer that opened the database to reach its wait for the lock


def make_db(path: Path, journal_mode: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1, 101)])
    conn.close()


def opened_by(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open (the writer's connection to the database)."""
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        try:
            if os.readlink(fd) == str(path):
                return True
        except OSError:
            continue
    return False


def waits_in(pid: int, db: Path) -> bool:
    """The writer has opened the database, and has had the time to meet the lock and wait."""
    if not opened_by(pid, db):
        return False
    time.sleep(SETTLE)
    return True


def free_to_write(db: Path) -> None:
    """Nothing of the cancelled backup holds the database: a write goes through at once, a TRUNCATE
    checkpoint completes, and the database is whole."""
    conn = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (1000)")
        conn.execute("COMMIT")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 101
    finally:
        conn.close()


@pytest.fixture
def fs() -> Iterator[LoopFs]:
    with loop_filesystem("btrfs", 1 << 30) as made:
        yield made


def test_a_checkpoint_waiting_for_a_reader_ends_at_the_cancel(fs: LoopFs, env, cli):
    db = fs.mount / "app.db"
    make_db(db, "wal")
    keep = sqlite3.connect(db, isolation_level=None)  # the -wal stays when the writer's connection closes
    keep.execute("INSERT INTO t VALUES (101)")
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # reads the -wal: TRUNCATE waits for it
    keep.execute("DELETE FROM t WHERE n = 101")  # and a newer state than the reader's
    repo = Path(env["SHADOWVAULT_REPOSITORY"])
    try:
        with running_daemon() as daemon, Client(daemon.socket) as client:
            run = _backup(client, repo, fs, f"sqlite:{db}")
            report = _cancel_once(lambda: waits_in(daemon.process.pid, db), client, run, "the checkpoint")
            assert_cancelled(report)
            assert "cancelled at prepare_snapshot" in report["error"], report["error"]
            assert not opened_by(daemon.process.pid, db), "the writer's connection is closed"
    finally:
        reader.execute("COMMIT")
        reader.close()
    free_to_write(db)
    keep.close()
    assert _snapshots(cli, repo) == "[]"


def test_a_freeze_waiting_for_the_write_lock_ends_at_the_cancel(fs: LoopFs, env, cli):
    db = fs.mount / "app.db"
    make_db(db, "delete")  # prepare_snapshot has no checkpoint to make: the wait is the freeze's
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a long write transaction
    repo = Path(env["SHADOWVAULT_REPOSITORY"])
    try:
        with running_daemon() as daemon, Client(daemon.socket) as client:
            run = _backup(client, repo, fs, f"sqlite:{db}")
            report = _cancel_once(lambda: waits_in(daemon.process.pid, db), client, run, "BEGIN IMMEDIATE")
            assert_cancelled(report)
            assert "cancelled at freeze" in report["error"], report["error"]
            assert not opened_by(daemon.process.pid, db), "the writer's connection is closed"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    free_to_write(db)
    assert _snapshots(cli, repo) == "[]"


def test_ctrl_c_of_a_backup_whose_freeze_waits_for_the_write_lock(fs: LoopFs, env, cli):
    """Without the daemon, Ctrl-C aborts the set: abort ends the freeze's wait (no busy handler to
    wait out), releases, and the command ends with 130."""
    db = fs.mount / "app.db"
    make_db(db, "delete")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        command = [sys.executable, "-m", "shadowvault.cli.launch", "backup", "--writer", f"sqlite:{db}"]
        backup = subprocess.Popen(
            [*command, str(fs.mount)],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + BOUND
        while not waits_in(backup.pid, db):
            assert backup.poll() is None, backup.communicate()[1]
            assert time.monotonic() < deadline, "the writer never opened the database"
            time.sleep(0.05)
        interrupted = time.monotonic()
        backup.send_signal(signal.SIGINT)
        _, err = backup.communicate(timeout=BOUND)
        took = time.monotonic() - interrupted
        assert took < PROMPT, f"the backup took {took:.0f} s to end after Ctrl-C: the wait was not ended"
        assert backup.returncode == 130, err
        assert b"Traceback" not in err, err
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    free_to_write(db)
    assert _snapshots(cli, Path(env["SHADOWVAULT_REPOSITORY"])) == "[]"


def test_a_freeze_waiting_for_a_slow_bgsave_ends_at_the_cancel(fs: LoopFs, env, cli):
    with S.redis_server(fs.mount / "redis", appendonly=True) as server:
        redis = S.redis_client(server)
        redis.mset({f"key:{n}": "x" * 100 for n in range(200)})
        redis.config_set("rdb-key-save-delay", 1_000_000)  # a microsecond pause per key: 200 s to save
        repo = Path(env["SHADOWVAULT_REPOSITORY"])
        # the connections open before the backup (the test's own)
        before = {c["id"] for c in redis.client_list()}
        with running_daemon() as daemon, Client(daemon.socket) as client:
            run = _backup(client, repo, fs, f"redis:127.0.0.1:{server.port}")

            def saving() -> bool:
                return bool(redis.info("persistence")["rdb_bgsave_in_progress"])

            report = _cancel_once(saving, client, run, "the BGSAVE")
        assert_cancelled(report)
        assert "cancelled at freeze" in report["error"], report["error"]
        # nothing of the set is held: AOF rewrites are on again, the server takes writes
        assert redis.config_get("auto-aof-rewrite-percentage") == {"auto-aof-rewrite-percentage": "100"}
        assert redis.set("after", "1") and redis.get("after") == b"1"
        # the writer's connection is closed by its abort, which may end a moment after the run's
        # report (under load, seconds): no connection opened since the backup started stays

        def opened_since() -> list[dict]:
            return [c for c in redis.client_list() if c["id"] not in before]

        deadline = time.monotonic() + 20
        while opened_since() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert opened_since() == [], f"the writer's connection is closed: {redis.client_list()}"
    assert _snapshots(cli, repo) == "[]"
