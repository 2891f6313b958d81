"""`restore SNAP --writer NAME[:INSTANCE]` as a user runs it: real servers on a loop btrfs, end to end.

backup with the writer -> the application writes more -> restore through the writer (in place, or
below --target-root) -> the application runs again on the backup's data and passes its own check;
what was written after the backup is gone (set aside, never deleted). PostgreSQL (in place and to an
alternate location on a fresh port), MariaDB (in place, restarted by start_command), Redis (alternate
location), an SDK external writer (the manifest's restore methods), and the bad-input lines.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.fixtures import servers as S


def repo_env(path: Path) -> dict[str, str]:
    Repository.init(path, PASSWORD, kdf_params=FAST_KDF).close()
    return {"SHADOWVAULT_REPOSITORY": str(path), "SHADOWVAULT_PASSWORD": PASSWORD}


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def of_type(done, kind: str) -> list[dict]:
    return [m for m in json_lines(done.stdout) if m.get("message_type") == kind]


def backup(cli, env, writer: str, path: Path) -> str:
    done = cli("backup", "--json", "--writer", writer, path, env=env)
    assert done.returncode == 0, done.stderr
    return of_type(done, "summary")[0]["snapshot_id"]


def one_line_error(done, code: int = 2) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def amcheck(server: S.Server) -> None:
    done = subprocess.run(
        [S.PG_BIN / "pg_amcheck", "-h", server.socket, "-p", str(server.port), "-U", "postgres",
         "--all", "--install-missing", "--heapallindexed"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def rows(server: S.Server) -> tuple[int, int]:
    with S.pg_connect(server) as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone()[0] is False
        return conn.execute("select count(*), coalesce(max(n), 0) from t").fetchone()


def test_postgresql_restored_in_place_through_its_writer(btrfs, cli):
    S.open_for_service(btrfs.mount)
    env = repo_env(btrfs.mount / "repo")
    datadir = btrfs.mount / "pgdata"
    with S.postgres_server(datadir, wal_segsize_mb=1) as pg:
        writer = f"postgresql:{pg.datadir}"
        with S.pg_connect(pg) as conn:
            conn.execute("create table t (n int primary key, pad text)")
            conn.execute("insert into t select n, repeat('x', 100) from generate_series(1, 1000) n")
        snap = backup(cli, env, writer, datadir)
        with S.pg_connect(pg) as conn:  # written after the backup: must not come back
            conn.execute("insert into t select n, 'late' from generate_series(1001, 1500) n")

        dry = cli("restore", snap, "--writer", writer, "--dry-run", "--json", env=env)
        assert dry.returncode == 0, dry.stderr
        (plan,) = of_type(dry, "writer_plan")
        assert plan["decision"] == "restore" and plan["stop_start"] is True
        assert plan["restore_methods"] == ["stop_restore_start"]
        assert {"path": str(datadir), "target": str(datadir), "action": "replace"} in plan["paths"]
        assert of_type(dry, "summary")[0]["restored"] == []
        assert rows(pg) == (1500, 1500)  # a dry run stops nothing and replaces nothing

        # To an alternate location beside the running cluster: a fresh port and socket for the copy.
        alt = btrfs.mount / "alt"
        socket_dir = S.private_dir("sv-pg-cli-", owner="postgres")
        copy = S.Server("postgresql", alt / "pgdata", socket_dir, port=S.free_port(), socket=str(socket_dir))
        try:
            done = cli(
                "restore", snap, "--writer", writer, "--target-root", alt,
                "--writer-option", f"{writer}.port={copy.port}",
                "--writer-option", f"postgresql.socket_dir={socket_dir}",
                env=env,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            copy.datadir = alt / str(datadir).lstrip("/")
            copy.pid = int((copy.datadir / "postmaster.pid").read_text().split()[0])
            assert rows(copy) == (1000, 1000)
            amcheck(copy)
            assert rows(pg) == (1500, 1500)  # the running cluster was left alone
        finally:
            copy.stop(timeout=60)
            shutil.rmtree(socket_dir, ignore_errors=True)

        restored_pid = 0
        try:
            done = cli("restore", snap, "--writer", writer, env=env)
            assert done.returncode == 0, done.stderr
            assert f"restored {writer} in place" in done.stderr, done.stderr
            restored_pid = int((datadir / "postmaster.pid").read_text().split()[0])
            assert restored_pid != pg.pid
            assert rows(pg) == (1000, 1000)  # same port and socket (postgresql.conf): the backup's rows only
            amcheck(pg)
            (aside,) = btrfs.mount.glob("pgdata.pre-restore-*")  # the replaced cluster, kept
            assert (aside / "PG_VERSION").exists()
        finally:
            if restored_pid:
                S.stop_pid(restored_pid, timeout=60)


def test_redis_restored_to_an_alternate_location_and_bad_input(btrfs, cli):
    S.open_for_service(btrfs.mount)
    env = repo_env(btrfs.mount / "repo")
    plain = btrfs.mount / "plain"
    plain.mkdir()
    (plain / "note.txt").write_text("no application here\n")
    with S.redis_server(btrfs.mount / "redis") as redis:
        writer = f"redis:127.0.0.1:{redis.port}"
        client = S.redis_client(redis)
        for n in range(1, 101):
            client.set(f"k:{n}", n)
        snap = backup(cli, env, writer, redis.datadir)
        for n in range(101, 151):
            client.set(f"k:{n}", n)

        alt = btrfs.mount / "alt"
        done = cli("restore", snap, "--writer", "redis", "--target-root", alt, "--json", env=env)
        assert done.returncode == 0, done.stderr
        assert of_type(done, "summary")[0]["restored"] == [writer]
        assert client.dbsize() == 150  # an alternate location leaves the running server alone
        base = S.private_dir("sv-redis-cli-")
        copy = S.start_redis(alt / str(redis.datadir).lstrip("/"), base, S.free_port())
        try:
            restored = S.redis_client(copy)
            assert restored.dbsize() == 100
            assert restored.get("k:100") == b"100" and not restored.exists("k:101")
        finally:
            copy.stop()
            shutil.rmtree(base, ignore_errors=True)

        # A writer the snapshot does not have: one line naming what it has.
        line = one_line_error(cli("restore", snap, "--writer", "postgresql", env=env))
        assert "postgresql" in line and writer in line, line
        line = one_line_error(
            cli("restore", snap, "--writer", "redis", "--writer-option", "pg.port=1", env=env)
        )
        assert "pg" in line and writer in line, line

    # A snapshot without writer components.
    done = cli("backup", "--json", plain, env=env)
    assert done.returncode == 0, done.stderr
    plain_snap = of_type(done, "summary")[0]["snapshot_id"]
    line = one_line_error(cli("restore", plain_snap, "--writers", env=env))
    assert "no writer components" in line or "no backup manifest" in line, line

    # Options that do not go together.
    line = one_line_error(cli("restore", snap, "--writer", "redis", "--component", "files", env=env))
    assert "--component" in line
    line = one_line_error(cli("restore", snap, "--writer-option", "port=1", "--target", alt, env=env))
    assert "--writer-option" in line
    line = one_line_error(cli("restore", f"{snap}:/x", "--writers", env=env))
    assert "SUBPATH" in line
    line = one_line_error(cli("restore", snap, "--writers", "--include", "/x", env=env))
    assert "--include" in line


RESTORE_WRITER = """
import json

class W(sdk.Writer):
    def identify(self, req):
        return [{"name": "data", "paths": self.config["data"], "restore_method": self.config["method"]}]

    def freeze(self, req):
        pass

    def thaw(self, req):
        pass

    def _log(self, req):
        with open(self.config["log"], "a") as f:
            f.write(json.dumps([req["event"], req["target_root"], req.get("options", {})]) + "\\n")

    def pre_restore(self, req):
        self._log(req)

    def post_restore(self, req):
        self._log(req)
"""


def test_external_writer_restore_follows_the_manifest_restore_methods(btrfs, cli, private_dirs):
    """restore_if_not_there skips data that is there; restore_to_alternate_location refuses in place."""
    env = repo_env(btrfs.mount / "repo")
    app, log = btrfs.mount / "app", btrfs.mount / "restore.log"
    app.mkdir()
    (app / "data.txt").write_text("v1\n")
    script = btrfs.mount / "restore_writer.py"
    script.write_text("from shadowvault import writer_sdk as sdk\n" + RESTORE_WRITER + "\nsdk.run(W)\n")
    script.chmod(0o755)
    config = private_dirs / "config" / "writers.d" / "app.toml"

    def backup_with(method: str) -> str:
        config.write_text(
            f'type = "external"\ncommand = ["{sys.executable}", "{script}"]\npaths = ["{app}"]\n'
            f'[options]\ndata = ["{app}"]\nmethod = "{method}"\nlog = "{log}"\n'
        )
        config.chmod(0o644)
        return backup(cli, env, "app", app)

    def events() -> list[list]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    if_not_there = backup_with("restore_if_not_there")
    (app / "data.txt").write_text("v2\n")
    done = cli("restore", if_not_there, "--writer", "app", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert of_type(done, "writer_plan")[0]["decision"] == "skip"
    assert of_type(done, "summary")[0]["skipped"] == ["external:app"]
    assert (app / "data.txt").read_text() == "v2\n" and events() == []  # present: left alone, no event
    (app / "data.txt").unlink()
    done = cli("restore", if_not_there, "--writer", "external:app", "--writer-option", "app.mode=1", env=env)
    assert done.returncode == 0, done.stderr
    assert (app / "data.txt").read_text() == "v1\n"
    assert [e[:2] for e in events()] == [["pre_restore", "/"], ["post_restore", "/"]]
    assert events()[0][2].get("mode") == 1  # a WRITER.KEY=VALUE option reaches that writer

    alternate = backup_with("restore_to_alternate_location")
    line = one_line_error(cli("restore", alternate, "--writers", env=env))
    assert "--target-root" in line and "external:app" in line, line
    target = btrfs.mount / "elsewhere"
    done = cli("restore", alternate, "--writers", "--target-root", target, env=env)
    assert done.returncode == 0, done.stderr
    assert (target / str(app).lstrip("/") / "data.txt").read_text() == "v1\n"
    assert events()[-1][:2] == ["post_restore", str(target)]


def test_mariadb_restored_in_place_and_restarted_by_its_writer(btrfs, cli):
    S.open_for_service(btrfs.mount)
    env = repo_env(btrfs.mount / "repo")
    datadir = btrfs.mount / "maria"
    with S.mariadb_server(datadir) as maria:
        writer = f"mariadb:{maria.datadir}"
        conn = S.mariadb_connect(maria)
        with conn.cursor() as cur:
            cur.execute("create database app")
            cur.execute("create table app.t (n int primary key) engine=innodb")
            cur.execute("insert into app.t select seq from app.seq_1_to_1000")
        snap = backup(cli, env, writer, datadir)
        with conn.cursor() as cur:  # written after the backup: must not come back
            cur.execute("insert into app.t select seq from app.seq_1001_to_1500")
        conn.close()

        start = ["sh", "-c", shlex.join(S.mariadb_args(datadir, maria.base)) + " >/dev/null 2>&1 &"]
        try:
            done = cli(
                "restore", snap, "--writer", "mariadb",
                "--writer-option", f"mariadb.start_command={json.dumps(start)}",
                "--writer-option", f"socket={maria.base}/sock",
                "--writer-option", "start_timeout=60",
                env=env,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            restarted = S.Server("mariadb", datadir, maria.base, socket=maria.socket)
            restarted.pid = int((maria.base / "pid").read_text())
            assert restarted.pid != maria.pid
            check = subprocess.run(
                ["mariadb-check", f"--socket={maria.socket}", "-uroot", "app"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert check.returncode == 0 and "OK" in check.stdout, check.stdout + check.stderr
            conn = S.mariadb_connect(restarted)
            with conn.cursor() as cur:
                cur.execute("select count(*), max(n) from app.t")
                assert cur.fetchone() == (1000, 1000)
            conn.close()
        finally:
            if (maria.base / "pid").exists():
                S.stop_pid(int((maria.base / "pid").read_text()), timeout=60)
