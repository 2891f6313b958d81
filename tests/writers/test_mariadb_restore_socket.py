"""A MariaDB copy restored and started by `start_command` is checked on its own socket.

Without a `socket` option the writer's CHECK TABLE connected with no socket at all (pymysql's
default, localhost:3306: nothing, or another server), waited the whole start_timeout (10 minutes by
default) and failed with "the restored server does not answer on None". It now takes the socket of
the server working in the restored data directory.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

from tests.fixtures import servers as S
from tests.writers.test_restore_cli import backup, repo_env


def test_a_copy_started_elsewhere_is_checked_on_its_own_socket(btrfs, cli, private_dirs):
    S.open_for_service(btrfs.mount)
    env = repo_env(btrfs.mount / "repo")
    datadir = btrfs.mount / "maria"
    target = btrfs.mount / "restored"
    copy_base = S.private_dir("sv-maria-copy-")
    with S.mariadb_server(datadir) as maria:
        conn = S.mariadb_connect(maria)
        with conn.cursor() as cur:
            cur.execute("create database app")
            cur.execute("create table app.t (n int primary key) engine=innodb")
            cur.execute("insert into app.t select seq from app.seq_1_to_100")
        conn.close()
        snap = backup(cli, env, f"mariadb:{maria.datadir}", datadir)

        copy = target / str(datadir).lstrip("/")
        start = ["sh", "-c", shlex.join(S.mariadb_args(copy, copy_base)) + " >/dev/null 2>&1 &"]

        def restore_copy() -> subprocess.CompletedProcess[str]:
            """The snapshot's database restored below `target`, started there by `start`."""
            return cli(
                "restore", snap, "--writer", "mariadb", "--target-root", target,
                "--writer-option", f"start_command={json.dumps(start)}",
                "--writer-option", "start_timeout=20",
                env=env, timeout=120,
            )  # fmt: skip

        try:
            done = restore_copy()
            assert done.returncode == 0, done.stderr
            restored = S.Server("mariadb", copy, copy_base, socket=f"{copy_base}/sock")
            conn = S.mariadb_connect(restored)
            with conn.cursor() as cur:
                cur.execute("select count(*) from app.t")
                assert cur.fetchone() == (100,)
            conn.close()
            assert S.process_alive(maria.pid)  # the original was left alone
            S.stop_pid(int((copy_base / "pid").read_text()), timeout=60)

            # A writers.d entry names the original's socket: a copy elsewhere is still checked on its
            # own (with the original stopped, its socket would not answer: start_timeout, failure).
            config = private_dirs / "config" / "writers.d" / "maria.toml"
            config.write_text(f'type = "mariadb"\ninstance = "{datadir}"\nsocket = "{maria.socket}"\n')
            config.chmod(0o644)
            maria.stop()
            shutil.rmtree(target)
            done = restore_copy()
            assert done.returncode == 0, done.stderr
        finally:
            if (copy_base / "pid").exists():
                S.stop_pid(int((copy_base / "pid").read_text()), timeout=60)
            shutil.rmtree(copy_base, ignore_errors=True)
