"""A backup cancelled while a database writer's SQL statement waits on its server.

The statement is cancelled on the server (PostgreSQL: the driver's cancel request; MariaDB: KILL
QUERY from a second session, at prepare_snapshot and at freeze), the writer is aborted as on any
failure, and the run ends `cancelled` long before the statement would have ended by itself; Ctrl-C
of a backup without the daemon does the same. Afterwards nothing of the backup is held on the
server: no session of the writer, no backup mode or lock (other sessions write, another backup
starts), and the database passes its integrity check. Real servers on a btrfs loop filesystem, a
real daemon; the statement is held by the server itself (a stopped checkpointer, a table lock held
by another session), and the cancel comes once the test sees it waiting.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shadowvault.client import Client
from shadowvault.service.runs import FINISHED
from tests.archive.helpers import PASSWORD
from tests.fixtures import servers as S
from tests.fixtures.loads import MariadbLoad, PostgresLoad
from tests.fixtures.loopfs import LoopFs, loop_filesystem
from tests.service.daemon import running_daemon
from tests.service.run_waits import BOUND, assert_cancelled, ended
from tests.writers.test_mariadb import check_restored as check_maria
from tests.writers.test_postgresql import check_restored

PROMPT = 20.0  # seconds a cancelled run may take to end; the statements would wait 60 s or forever


@pytest.fixture
def pg_on_btrfs() -> Iterator[tuple[LoopFs, S.Server]]:
    with loop_filesystem("btrfs", 1 << 30) as fs:
        S.open_for_service(fs.mount)
        with S.postgres_server(fs.mount / "pgdata", wal_segsize_mb=1) as pg:
            yield fs, pg


@pytest.fixture
def maria_on_btrfs() -> Iterator[tuple[LoopFs, S.Server]]:
    with loop_filesystem("btrfs", 1 << 30) as fs, S.mariadb_server(fs.mount / "maria") as server:
        yield fs, server


def _cancel_once(seen: Callable[[], bool], client: Client, run: dict[str, Any], what: str) -> dict[str, Any]:
    """Wait until `seen` (the writer's statement waiting on the server), cancel the run, and return
    its report once it has ended, which must be within PROMPT of the cancel."""
    deadline = time.monotonic() + BOUND
    while not seen():
        assert client.run(run["id"])["state"] not in FINISHED, client.run(run["id"])
        assert time.monotonic() < deadline, f"{what} was never seen"
        time.sleep(0.05)
    cancelled = time.monotonic()
    assert client.cancel_run(run["id"])["state"] == "cancelling"
    report = ended(client, run["id"])
    took = time.monotonic() - cancelled
    assert took < PROMPT, (
        f"the run took {took:.0f} s to end after its cancel: the statement was not cancelled"
    )
    return report


def _eventually(check: Callable[[], bool], what: str) -> None:
    """Wait for `check` (a server ends a dropped session's process a moment after the client left)."""
    deadline = time.monotonic() + BOUND
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _backup(client: Client, repo: Path, fs: LoopFs, writer: str) -> dict[str, Any]:
    return client.start_backup(str(repo), [str(fs.mount)], password=PASSWORD, writers=[writer])


def _snapshots(cli, repo: Path) -> str:
    done = cli("snapshots", "--repo", repo, "--json", env={"SHADOWVAULT_PASSWORD": PASSWORD})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# ---------------------------------------------------------------- PostgreSQL


def _pg_rows(pg: S.Server, sql: str) -> list[tuple]:
    with S.pg_connect(pg) as conn:
        return conn.execute(sql).fetchall()


def _checkpointer(pg: S.Server) -> int:
    return int(_pg_rows(pg, "select pid from pg_stat_activity where backend_type = 'checkpointer'")[0][0])


def _backup_start_waits(pg: S.Server) -> bool:
    return bool(
        _pg_rows(
            pg,
            "select 1 from pg_stat_activity where application_name = 'shadowvault' and state = 'active'"
            " and query like '%pg_backup_start%' and wait_event = 'CheckpointStart'",
        )
    )


def test_pg_backup_start_waiting_for_a_checkpoint_is_cancelled_on_the_server(pg_on_btrfs, env, cli):
    fs, pg = pg_on_btrfs
    load = PostgresLoad(pg)
    load.setup()
    repo = Path(env["SHADOWVAULT_REPOSITORY"])
    checkpointer = _checkpointer(pg)
    os.kill(checkpointer, signal.SIGSTOP)  # the checkpoint pg_backup_start asks for never starts
    try:
        with running_daemon() as daemon, Client(daemon.socket) as client:
            run = _backup(client, repo, fs, f"postgresql:{pg.datadir}")
            report = _cancel_once(lambda: _backup_start_waits(pg), client, run, "pg_backup_start waiting")
        assert_cancelled(report)
        assert "cancelled at prepare_snapshot" in report["error"], report["error"]
        _eventually(
            lambda: not _pg_rows(pg, "select 1 from pg_stat_activity where application_name = 'shadowvault'"),
            "the writer's session (and with it its base backup) is left",
        )
    finally:
        os.kill(checkpointer, signal.SIGCONT)
    load.start()  # nothing of the cancelled backup holds the server: writes go through
    try:
        load.wait_for(10, timeout=60)
    finally:
        load.stop()
    assert not load.errors
    with S.pg_connect(pg) as conn:
        conn.execute("checkpoint")
        conn.execute("select pg_backup_start('another', fast => true)")  # another backup starts and ends
        conn.execute("select pg_backup_stop(wait_for_archive => false)")
    check_restored(pg, must_have=load.acks[-1].n)  # the rows committed, and pg_amcheck passes
    assert _snapshots(cli, repo) == "[]"


def test_ctrl_c_of_a_backup_without_the_daemon_cancels_pg_backup_start_too(pg_on_btrfs, env, cli):
    fs, pg = pg_on_btrfs
    checkpointer = _checkpointer(pg)
    os.kill(checkpointer, signal.SIGSTOP)
    try:
        command = [sys.executable, "-m", "shadowvault.cli.launch", "backup"]
        backup = subprocess.Popen(
            [*command, "--writer", f"postgresql:{pg.datadir}", str(fs.mount)],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + BOUND
        while not _backup_start_waits(pg):
            assert backup.poll() is None, backup.communicate()[1]
            assert time.monotonic() < deadline, "pg_backup_start waiting was never seen"
            time.sleep(0.05)
        backup.send_signal(signal.SIGINT)
        _, err = backup.communicate(timeout=PROMPT)  # not the 300 s of prepare_snapshot
        assert backup.returncode == 130, err
        assert b"Traceback" not in err, err
        _eventually(
            lambda: not _pg_rows(pg, "select 1 from pg_stat_activity where application_name = 'shadowvault'"),
            "the writer's session (and with it its base backup) is left",
        )
    finally:
        os.kill(checkpointer, signal.SIGCONT)
    assert _snapshots(cli, Path(env["SHADOWVAULT_REPOSITORY"])) == "[]"


# ---------------------------------------------------------------- MariaDB


def _maria_rows(server: S.Server, sql: str, params: list[str] | None = None) -> list[tuple]:
    conn = S.mariadb_connect(server)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def _waits(server: S.Server, statement: str) -> Callable[[], bool]:
    """Whether a session runs `statement` (a LIKE pattern) and waits for a lock."""
    sql = "select 1 from information_schema.processlist where info like %s and state like 'Waiting%%'"
    return lambda: bool(_maria_rows(server, sql, [statement]))


@pytest.mark.parametrize(
    ("lock_method", "phase", "statement"),
    [
        ("backup_stage", "prepare_snapshot", "backup stage %"),
        ("ftwrl", "freeze", "flush tables with read lock"),
    ],
)
def test_a_lock_statement_waiting_behind_a_table_lock_is_killed_on_the_server(
    maria_on_btrfs, env, cli, private_dirs: Path, lock_method: str, phase: str, statement: str
):
    fs, server = maria_on_btrfs
    config = private_dirs / "config" / "writers.d" / "maria.toml"
    config.write_text(f'type = "mariadb"\ninstance = "{server.datadir}"\nlock_method = "{lock_method}"\n')
    config.chmod(0o644)
    load = MariadbLoad(server)
    load.setup()
    repo = Path(env["SHADOWVAULT_REPOSITORY"])
    holder = S.mariadb_connect(server)
    with holder.cursor() as cur:  # BACKUP STAGE START and FTWRL wait for it (lock_wait_timeout: 60 s)
        cur.execute("lock tables app.counter write")
    try:
        with running_daemon() as daemon, Client(daemon.socket) as client:
            run = _backup(client, repo, fs, f"mariadb:{server.datadir}")
            report = _cancel_once(_waits(server, statement), client, run, f"`{statement}` waiting")
        assert_cancelled(report)
        assert f"cancelled at {phase}" in report["error"], report["error"]
    finally:
        with holder.cursor() as cur:
            cur.execute("unlock tables")
        holder.close()
    _eventually(
        lambda: (
            not _maria_rows(
                server,
                "select 1 from information_schema.processlist where id <> connection_id()"
                " and command <> 'Daemon'",
            )
        ),
        "the writer's session is left",
    )
    other = S.mariadb_connect(server)
    try:
        with other.cursor() as cur:  # no backup stage is left: another backup starts, and ends
            cur.execute("set session lock_wait_timeout = 5")
            cur.execute("backup stage start")
            cur.execute("backup stage block_commit")
            cur.execute("backup stage end")
    finally:
        other.close()
    load.start()  # writes go through
    try:
        load.wait_for(10, timeout=60)
    finally:
        load.stop()
    assert not load.errors
    check_maria(server, must_have=load.acks[-1].n)  # the rows committed, and mariadb-check passes
    assert _snapshots(cli, repo) == "[]"
