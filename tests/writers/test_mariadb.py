"""MariaDB writer on a real server: application consistency under load, restore, failures."""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from shadowvault.errors import ShadowError
from shadowvault.shadow.coordinator import SetOptions, shadow_set
from shadowvault.shadow.manifest import Component, Consistency, WriterState
from shadowvault.shadow.writers.base import RestoreContext
from shadowvault.shadow.writers.mariadb import MariadbWriter
from tests.fixtures import servers as S
from tests.fixtures.loads import MariadbLoad
from tests.fixtures.loopfs import loop_filesystem
from tests.writers.helpers import freeze_instant, lay_down, remove, report_of, restore_area, restore_root

ROUNDS = 20


@pytest.fixture
def maria_on_btrfs():
    with loop_filesystem("btrfs", 1 << 30) as fs, S.mariadb_server(fs.mount / "maria") as server:
        yield fs, server


def open_restored(root: Path, components: list[Component]) -> S.Server:
    """Restore through the writer: post_restore starts mariadbd on the copy and CHECKs every table."""
    datadir = root / components[0].metadata["data_directory"].lstrip("/")
    base = S.private_dir("sv-mariar-")
    start = ["sh", "-c", shlex.join(S.mariadb_args(datadir, base)) + " >/dev/null 2>&1 &"]
    writer = MariadbWriter(components[0].instance)
    ctx = RestoreContext(
        components=components,
        target_root=str(root),
        options={"start_command": start, "socket": f"{base}/sock", "start_timeout": 60},
    )
    try:
        writer.post_restore(ctx)
    except BaseException:
        if (base / "pid").exists():
            S.stop_pid(int((base / "pid").read_text()), signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)
        raise
    pid = int((base / "pid").read_text())
    return S.Server("mariadb", datadir, base, pid=pid, socket=f"{base}/sock")


def close_restored(server: S.Server) -> None:
    server.stop(signal.SIGKILL)  # a throwaway copy: no need for a clean shutdown
    shutil.rmtree(server.base, ignore_errors=True)


def check_restored(server: S.Server, must_have: int) -> int:
    done = subprocess.run(
        ["mariadb-check", f"--socket={server.socket}", "-uroot", "--all-databases"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(
        line.rstrip().endswith("OK") for line in done.stdout.splitlines() if line.startswith("app.")
    ), done.stdout
    conn = S.mariadb_connect(server)
    try:
        with conn.cursor() as cur:
            cur.execute("select count(*), coalesce(max(n), 0) from app.load")
            count, highest = cur.fetchone()
            cur.execute("select n from app.counter")
            counter = cur.fetchone()[0]
    finally:
        conn.close()
    assert count == highest == counter, (count, highest, counter)
    assert highest >= must_have, f"transaction {must_have} was acknowledged before the freeze but is missing"
    return highest


def test_every_acknowledged_transaction_survives_20_shadow_sets_under_load(maria_on_btrfs):
    fs, server = maria_on_btrfs
    area = restore_area(fs.mount)
    load = MariadbLoad(server)
    load.setup()
    load.start()
    try:
        load.wait_for(20)
        for _ in range(ROUNDS):
            root = restore_root(area)
            try:
                with shadow_set(
                    [str(fs.mount)], SetOptions(writers=[f"mariadb:{server.datadir}"], auto_writers=False)
                ) as manifest:
                    report = report_of(manifest, "mariadb")
                    assert report.state == WriterState.WAITING_FOR_BACKUP_COMPLETE, report.failure
                    component = report.components[0]
                    assert component.consistency == Consistency.APPLICATION
                    assert component.metadata["method"] == "backup_stage"
                    assert component.metadata["binlog_file"].startswith("binlog.")
                    assert component.metadata["binlog_position"] > 0
                    must_have = load.acked_before(freeze_instant(manifest, report))
                    lay_down(manifest, report, root)
                restored = open_restored(root, report.components)
                try:
                    check_restored(restored, must_have)
                finally:
                    close_restored(restored)
            finally:
                remove(root)
    finally:
        load.stop()
    assert not load.errors


def test_commits_are_blocked_only_inside_the_freeze(maria_on_btrfs):
    """BACKUP STAGE BLOCK_COMMIT holds commits; they go on as soon as the set is thawed."""
    fs, server = maria_on_btrfs
    load = MariadbLoad(server)
    load.setup()
    load.start()
    try:
        load.wait_for(10)
        with shadow_set(
            [str(fs.mount)], SetOptions(writers=[f"mariadb:{server.datadir}"], auto_writers=False)
        ) as manifest:
            thawed = len(load.acks)
        load.wait_for(thawed + 10)
        assert manifest.freeze_window is not None
    finally:
        load.stop()
    assert not load.errors


def test_server_down_names_the_writer_and_aborts(maria_on_btrfs):
    fs, server = maria_on_btrfs
    server.stop()
    with (
        pytest.raises(
            ShadowError,
            match=rf"writer mariadb:{server.datadir} failed at prepare_snapshot: cannot "
            "connect to MariaDB",
        ),
        shadow_set(
            [str(fs.mount)],
            SetOptions(
                writers=[MariadbWriter(str(server.datadir), socket=server.socket)], auto_writers=False
            ),
        ),
    ):
        pass


def test_wrong_password_degrades_when_configured(maria_on_btrfs):
    fs, server = maria_on_btrfs
    writer = MariadbWriter(
        str(server.datadir),
        socket=server.socket,
        user=S.MARIADB_BACKUP_USER,
        password="wrong",
        on_failure="degrade",
    )
    with shadow_set([str(fs.mount)], SetOptions(writers=[writer], auto_writers=False)) as manifest:
        report = report_of(manifest, "mariadb")
        assert report.state == WriterState.FAILED_AT_PREPARE_SNAPSHOT
        assert "Access denied" in report.failure
        assert report.components[0].consistency == Consistency.CRASH
    writer = MariadbWriter(
        str(server.datadir),
        socket=server.socket,
        user=S.MARIADB_BACKUP_USER,
        password=S.MARIADB_BACKUP_PASSWORD,
    )
    with shadow_set([str(fs.mount)], SetOptions(writers=[writer], auto_writers=False)) as manifest:
        assert report_of(manifest, "mariadb").components[0].metadata["method"] == "backup_stage"


def test_reflink_provider_is_refused_clearly():
    """InnoDB writes in the background during BLOCK_COMMIT: a file-by-file copy cannot be trusted."""
    with loop_filesystem("xfs", 1 << 30) as fs, S.mariadb_server(fs.mount / "maria") as server:
        with (
            pytest.raises(
                ShadowError,
                match=r"writer mariadb:.* failed at post_snapshot: InnoDB files need one "
                r"atomic shadow",
            ),
            shadow_set(
                [str(fs.mount)],
                SetOptions(writers=[f"mariadb:{server.datadir}"], provider="reflink", auto_writers=False),
            ),
        ):
            pass
        conn = S.mariadb_connect(server)  # and the server was released: DDL works
        with conn.cursor() as cur:
            cur.execute("create database after_abort")
        conn.close()


def test_flush_tables_with_read_lock_path(maria_on_btrfs):
    """The FTWRL path (MariaDB < 10.4, MySQL) on the same server: consistent copies, lock released."""
    fs, server = maria_on_btrfs
    area = restore_area(fs.mount)
    load = MariadbLoad(server)
    load.setup()
    load.start()
    try:
        load.wait_for(10)
        for _ in range(3):
            root = restore_root(area)
            try:
                writer = MariadbWriter(str(server.datadir), lock_method="ftwrl")
                with shadow_set(
                    [str(fs.mount)], SetOptions(writers=[writer], auto_writers=False)
                ) as manifest:
                    report = report_of(manifest, "mariadb")
                    assert report.components[0].metadata["method"] == "ftwrl"
                    must_have = load.acked_before(freeze_instant(manifest, report))
                    lay_down(manifest, report, root)
                restored = open_restored(root, report.components)
                try:
                    check_restored(restored, must_have)
                finally:
                    close_restored(restored)
            finally:
                remove(root)
        done = len(load.acks)
        load.wait_for(done + 10)  # UNLOCK TABLES at thaw: commits go on
    finally:
        load.stop()
    assert not load.errors


def test_a_copy_restored_elsewhere_gets_its_own_binlog_index(tmp_path):
    from shadowvault.shadow.writers.mariadb_restore import relocate_binlog_index

    index = tmp_path / "restored" / "srv" / "db" / "binlog.index"
    index.parent.mkdir(parents=True)
    index.write_text("/srv/db/binlog.000001\n/srv/db/binlog.000002\n./relative.000003\n")
    ctx = RestoreContext(components=[], target_root=str(tmp_path / "restored"))
    relocate_binlog_index(str(index), ctx)
    root = tmp_path / "restored"
    assert index.read_text().splitlines() == [
        f"{root}/srv/db/binlog.000001",
        f"{root}/srv/db/binlog.000002",
        "./relative.000003",
    ]


def test_a_freeze_stuck_behind_a_table_lock_ends_at_the_freeze_timeout(maria_on_btrfs):
    """FTWRL waits for a session holding LOCK TABLES ... WRITE: the freeze timeout ends the wait."""
    import time

    fs, server = maria_on_btrfs
    load = MariadbLoad(server)
    load.setup()
    holder = S.mariadb_connect(server)
    with holder.cursor() as cur:
        cur.execute("lock tables app.counter write")
    try:
        writer = MariadbWriter(str(server.datadir), lock_method="ftwrl")
        started = time.monotonic()
        with (
            pytest.raises(
                ShadowError,
                match=r"writer mariadb:.* (timed out at freeze|failed at freeze: .*Lock wait timeout)",
            ),
            shadow_set([str(fs.mount)], SetOptions(writers=[writer], auto_writers=False, freeze_timeout=2)),
        ):
            pass
        assert time.monotonic() - started < 15
    finally:
        with holder.cursor() as cur:
            cur.execute("unlock tables")
        holder.close()
    load.start()  # nothing of the aborted set holds the server: writes go through
    try:
        load.wait_for(10, timeout=15)
    finally:
        load.stop()
    assert not load.errors
