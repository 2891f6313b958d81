"""Every application writer through a real backup into a repository and a restore through the writers.

Four servers under write load on one btrfs volume; `run_backup` finds their writers by itself; the
manifest stored in the repository carries what each restore needs (backup_label and WAL, binlog
position, LDIF); `restore_with_writers` lays each component down on another volume between its
writer's pre_restore and post_restore; each restored server starts, passes its own check, and holds
every transaction acknowledged before the freeze.
"""

from __future__ import annotations

import shlex
import shutil
import signal

from shadowvault.jobs.backup import BackupRequest, run_backup
from shadowvault.jobs.restore_writer import restore_with_writers
from shadowvault.jobs.writer_plan import load_manifest
from shadowvault.shadow.writers.registry import inventory
from tests.archive.helpers import new_repo
from tests.fixtures import servers as S
from tests.fixtures.loads import LdapLoad, MariadbLoad, PostgresLoad, RedisLoad
from tests.fixtures.loopfs import loop_filesystem
from tests.writers import test_ldap, test_mariadb, test_postgresql, test_redis


def test_backup_and_restore_through_every_writer():
    with (
        loop_filesystem("btrfs", 2 << 30) as data,
        loop_filesystem("btrfs", 2 << 30) as other,
    ):
        S.open_for_service(data.mount)
        S.open_for_service(other.mount)
        with (
            S.postgres_server(data.mount / "pgdata", wal_segsize_mb=1) as pg,
            S.mariadb_server(data.mount / "maria") as maria,
            S.redis_server(data.mount / "redis") as redis,
            S.slapd_server(data.mount / "ldap") as ldap,
        ):
            loads = {
                "postgresql": PostgresLoad(pg),
                "mariadb": MariadbLoad(maria),
                "redis": RedisLoad(redis),
                "ldap": LdapLoad(ldap),
            }
            for load in loads.values():
                load.setup()
                load.start()
            try:
                for load in loads.values():
                    load.wait_for(10)
                repo = new_repo(other.mount / "repo")
                result = run_backup(repo, BackupRequest(paths=[str(data.mount)]))
            finally:
                for load in loads.values():
                    load.stop()
            snapshot = result.snapshot
            listed = {entry.writer for entry in inventory() if entry.kind == "discovered"}
            assert {
                f"postgresql:{pg.datadir}",
                f"mariadb:{maria.datadir}",
                f"redis:127.0.0.1:{redis.port}",
                f"ldap:{ldap.config}",
            } <= listed, listed  # `writers list` shows every instance
            for name in loads:
                assert any(
                    c.startswith(
                        {"postgresql": "cluster", "mariadb": "server", "redis": "redis", "ldap": "ldap"}[name]
                    )
                    for c in snapshot.components
                )
            manifest = load_manifest(repo, snapshot)
            must_have = {}
            for report in manifest.writers:
                assert report.failure is None, report.failure
                component = report.components[0]
                assert str(component.consistency) == "application"
                must_have[report.name] = loads[report.name].acked_before(component.metadata["freeze_started"])
            assert set(must_have) == set(loads)

        # Every server above is stopped now; restore each through its writer onto the other volume.
        root = other.mount / "restored"
        root.mkdir(mode=0o755)
        pg_socket = S.private_dir("sv-pgr-", owner="postgres")
        maria_base = S.private_dir("sv-mariar-")
        ldap_base = S.private_dir("sv-ldapr-")
        maria_dir = root / str(maria.datadir).lstrip("/")
        ldap_conf = S.slapd_conf(ldap_base, root / str(ldap.datadir).lstrip("/"))
        pg_port = S.free_port()
        servers = []
        try:
            restored = restore_with_writers(
                repo,
                snapshot,
                str(root),
                writer_options={
                    "postgresql": {"port": pg_port, "socket_dir": str(pg_socket)},
                    "mariadb": {
                        "start_command": [
                            "sh",
                            "-c",
                            shlex.join(S.mariadb_args(maria_dir, maria_base)) + " >/dev/null 2>&1 &",
                        ],
                        "socket": f"{maria_base}/sock",
                        "start_timeout": 60,
                    },
                    "ldap": {"slapd_config": str(ldap_conf)},
                },
            )
            assert sorted(r.label.split(":")[0] for r in restored) == sorted(loads)

            pg_data = root / str(pg.datadir).lstrip("/")
            pg_server = S.Server(
                "postgresql",
                pg_data,
                pg_socket,
                port=pg_port,
                socket=str(pg_socket),
                pid=int((pg_data / "postmaster.pid").read_text().split()[0]),
            )
            servers.append(pg_server)
            test_postgresql.check_restored(pg_server, must_have["postgresql"])

            maria_server = S.Server(
                "mariadb",
                maria_dir,
                maria_base,
                socket=f"{maria_base}/sock",
                pid=int((maria_base / "pid").read_text()),
            )
            servers.append(maria_server)
            test_mariadb.check_restored(maria_server, must_have["mariadb"])

            test_redis.check_restored(root / str(redis.datadir).lstrip("/"), must_have["redis"])

            assert (root / str(ldap.datadir).lstrip("/") / "data.mdb").exists()
            assert test_ldap.count_entries(ldap_conf, ldap_base) >= must_have["ldap"]
        finally:
            for server in servers:
                server.stop()
            if (maria_base / "pid").exists():  # started by post_restore even if a later step failed
                S.stop_pid(int((maria_base / "pid").read_text()), signal.SIGKILL)
            for base in (pg_socket, maria_base, ldap_base):
                shutil.rmtree(base, ignore_errors=True)
