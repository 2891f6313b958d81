"""The restore logs in to the restored cluster with the instance's writers.d credentials, as the backup
did, and a refused login fails at once.

The restore built the writer without its writers.d entry, so post_restore always logged in as
`postgres` with no password: on a cluster whose pg_hba.conf does not let root in as `postgres`
(Debian's `local all postgres peer`; Shadowvault runs as root) the restored cluster started, then
the restore waited out recovery_timeout (600 s) on the refused login and failed.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from tests.fixtures import servers as S
from tests.writers.test_restore_cli import backup, repo_env


def count_as_backup_role(server: S.Server) -> int:
    with psycopg.connect(
        host=server.socket, port=server.port, user=S.PG_BACKUP_ROLE, password=S.PG_BACKUP_PASSWORD,
        dbname="postgres", autocommit=True,
    ) as conn:  # fmt: skip
        assert conn.execute("select pg_is_in_recovery()").fetchone() == (False,)
        return conn.execute("select count(*) from t").fetchone()[0]


def restarted_pid(datadir: Path) -> int:
    return int((datadir / "postmaster.pid").read_text().split()[0])


def test_the_restore_logs_in_as_the_writers_d_entry_says(btrfs, cli, private_dirs):
    S.open_for_service(btrfs.mount)
    env = repo_env(btrfs.mount / "repo")
    datadir = btrfs.mount / "pgdata"
    config = private_dirs / "config" / "writers.d" / "pg.toml"
    writer = f"postgresql:{datadir}"
    pids: list[int] = []
    with S.postgres_server(datadir, wal_segsize_mb=1) as pg:
        try:
            with S.pg_connect(pg) as conn:
                conn.execute("create table t (n int primary key)")
                conn.execute("insert into t select generate_series(1, 100)")
                conn.execute(f"grant select on t to {S.PG_BACKUP_ROLE}")
                (datadir / "pg_hba.conf").write_text("local all all scram-sha-256\n")  # no trust for root
                conn.execute("select pg_reload_conf()")
            config.write_text(
                f'type = "postgresql"\ninstance = "{datadir}"\n'
                f'user = "{S.PG_BACKUP_ROLE}"\npassword = "{S.PG_BACKUP_PASSWORD}"\n'
            )
            config.chmod(0o644)
            snap = backup(cli, env, writer, datadir)

            restore = ["restore", snap, "--writer", writer, "--writer-option", "recovery_timeout=30"]
            done = cli(*restore, env=env)
            pids.append(restarted_pid(datadir))
            assert done.returncode == 0, done.stderr
            assert count_as_backup_role(pg) == 100

            config.unlink()  # without the entry: `postgres`, refused; said at once, not after 30 s
            started = time.monotonic()
            done = cli(*restore, env=env)
            pids.append(restarted_pid(datadir))
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            line = done.stderr.strip().splitlines()[-1]  # after the line saying what was set aside
            assert time.monotonic() - started < 20, line
            assert "started but refuses 'postgres'" in line and "writers.d" in line, line
        finally:
            for pid in pids:
                S.stop_pid(pid, timeout=60)
