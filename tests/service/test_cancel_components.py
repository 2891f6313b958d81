"""Cancelling a run reaches the programs it runs: a database dump an application's writer makes,
and the descriptor limit those programs get from the daemon.

Real daemon, real PostgreSQL, real pg_dump, a real btrfs loop filesystem. The dump is made slow by
the database itself: its rows are read through a row-level security policy whose function sleeps,
so the cancel comes while pg_dump is writing rows, as a user would see it.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shadowvault.client import Client
from shadowvault.repo.repository import Repository
from shadowvault.service.runs import FINISHED
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.fixtures.servers import PG_BIN, pg_connect, postgres_server
from tests.service.daemon import running_daemon
from tests.service.run_waits import BOUND, assert_cancelled, ended
from tests.writers.test_external import processes_running, write_config, write_writer

ROWS = 200_000  # one millisecond each: minutes of dump, cut short after a few KiB
MIDWAY = 16 << 10  # bytes of the dump written before the cancel

DUMPING_WRITER = """
import subprocess

class W(sdk.Writer):
    # prepare_snapshot dumps the database beside the data; the dump is kept only once whole
    def prepare_snapshot(self, req):
        c = req["config"]
        self.partial = c["dump"] + ".partial"
        argv = [c["pg_dump"], "-h", c["host"], "-p", c["port"], "-U", "postgres", "--role=dumper",
                "--enable-row-security", "-t", "slow", "-f", self.partial, "postgres"]
        subprocess.run(argv, check=True)
        os.rename(self.partial, c["dump"])

    def freeze(self, req):
        pass

    def terminate(self):
        # SIGTERM (the coordinator gave up on us): pg_dump, in our process group, got it too
        if getattr(self, "partial", None) and os.path.exists(self.partial):
            os.unlink(self.partial)
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    Repository.init(path, PASSWORD, kdf_params=FAST_KDF).close()
    return path


def _slow_table(server) -> None:
    """Table `slow`, whose every row costs `dumper` a millisecond to read (RLS policy)."""
    with pg_connect(server) as conn:
        for statement in (
            "create table slow (i int, pad text)",
            f"insert into slow select i, repeat('x', 40) from generate_series(1, {ROWS}) i",
            "create role dumper nologin",
            "grant select on slow to dumper",
            "create function slow_true() returns boolean language plpgsql"
            " as $$ begin perform pg_sleep(0.001); return true; end $$",
            "alter table slow enable row level security",
            "create policy slowly on slow for select to dumper using (slow_true())",
        ):
            conn.execute(statement)


def _pg_dumps_of(port: int) -> list[int]:
    """pids of pg_dump processes talking to the server on `port`."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if argv and argv[0].endswith(b"pg_dump") and str(port).encode() in argv:
            found.append(int(entry))
    return found


def test_a_backup_cancelled_while_a_writer_dumps_its_database_stops_the_dump_and_leaves_nothing(
    btrfs, repo, private_dirs, tmp_path, cli
):
    dumps = btrfs.mount / "dumps"
    dumps.mkdir()
    (tmp_path / "pg").mkdir()
    with postgres_server(tmp_path / "pg" / "data") as server:
        _slow_table(server)
        writer = write_writer(tmp_path, "dumper", DUMPING_WRITER)
        write_config(
            "dumper",
            f"""
            type = "external"
            command = ["{sys.executable}", "{writer}"]
            paths = ["{dumps}"]
            [timeouts]
            prepare_snapshot = 1800
            [options]
            pg_dump = "{PG_BIN / "pg_dump"}"
            host = "{server.socket}"
            port = "{server.port}"
            dump = "{dumps / "app.sql"}"
        """,
        )
        partial = dumps / "app.sql.partial"
        with running_daemon() as daemon, Client(daemon.socket) as client:
            run = client.start_backup(str(repo), [str(dumps)], password=PASSWORD)
            deadline = time.monotonic() + BOUND
            while not (partial.exists() and partial.stat().st_size > MIDWAY):
                assert client.run(run["id"])["state"] not in FINISHED, client.run(run["id"])["error"]
                assert time.monotonic() < deadline, "the dump never got under way"
                time.sleep(0.05)
            assert _pg_dumps_of(server.port), "pg_dump runs"
            assert client.cancel_run(run["id"])["state"] == "cancelling"
            assert_cancelled(ended(client, run["id"]))
            assert client.shadow_sets() == [], "the set was aborted and released"
        assert not _pg_dumps_of(server.port), "pg_dump was stopped with its writer"
        assert not processes_running(writer), "the writer was terminated"
        assert sorted(p.name for p in dumps.iterdir()) == [], "no partial dump, no dump under its name"
        with pg_connect(server) as conn:
            assert conn.execute("select count(*) from slow").fetchone() == (ROWS,), "the database is intact"
    env = {"SHADOWVAULT_PASSWORD": PASSWORD, "SHADOWVAULT_NO_DAEMON": "1"}
    assert json.loads(cli("snapshots", "--repo", repo, "--json", env=env).stdout) == []
    checked = cli("check", "--repo", repo, env=env)
    assert checked.returncode == 0, checked.stderr


def _soft_nofile(limits: str) -> int:
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    return int(line.split()[3])


def test_a_script_writer_run_by_the_daemon_gets_the_descriptor_limit_the_daemon_started_with(
    btrfs, repo, private_dirs, tmp_path
):
    seen = tmp_path / "limits-seen"
    script = tmp_path / "record-limits.sh"
    script.write_text(f"#!/bin/sh\ncat /proc/self/limits > {seen}\n")
    script.chmod(0o700)
    config = private_dirs / "config" / "writers.d" / "limits.toml"
    config.write_text(textwrap.dedent(f'freeze = ["{script}"]\nthaw = ["/bin/true"]\n'))
    config.chmod(0o600)
    (btrfs.mount / "data").mkdir()
    with running_daemon(nofile=(1024, 8192)) as daemon, Client(daemon.socket) as client:
        run = client.start_backup(str(repo), [str(btrfs.mount / "data")], password=PASSWORD)
        assert ended(client, run["id"])["state"] == "succeeded"
        daemon_limits = Path(f"/proc/{daemon.process.pid}/limits").read_text()
    assert _soft_nofile(daemon_limits) == 8192, "the daemon raised its own limit"
    assert _soft_nofile(seen.read_text()) == 1024, "its writer's command got the one it started with"
