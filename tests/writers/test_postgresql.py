"""PostgreSQL writer on a real cluster: application consistency under load, restore, failures."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from shadowvault.errors import ShadowError, WriterError
from shadowvault.shadow.coordinator import SetOptions, shadow_set
from shadowvault.shadow.manifest import Component, Consistency, WriterState
from shadowvault.shadow.writers.base import FailurePolicy, RestoreContext
from shadowvault.shadow.writers.postgresql import PostgresqlWriter
from tests.fixtures import servers as S
from tests.fixtures.loads import PostgresLoad
from tests.fixtures.loopfs import loop_filesystem
from tests.writers.helpers import copy_out, freeze_instant, remove, report_of, restore_area, restore_root

ROUNDS = 20


@pytest.fixture
def pg_on_btrfs():
    """A cluster on its own btrfs (1 GiB sparse: every base backup ends a WAL segment)."""
    with loop_filesystem("btrfs", 1 << 30) as fs:
        S.open_for_service(fs.mount)
        with S.postgres_server(fs.mount / "pgdata", wal_segsize_mb=1) as pg:
            yield fs, pg


def close_restored(server: S.Server) -> None:
    server.stop(signal.SIGINT)
    shutil.rmtree(server.base, ignore_errors=True)


def lay_down(manifest, components: list[Component], root: Path) -> None:
    """The restore's first half: the writer's pre_restore, then the files from the shadow under `root`."""
    PostgresqlWriter(components[0].instance).pre_restore(
        RestoreContext(components=components, target_root=str(root))
    )
    copy_out(manifest, components[0].metadata["data_directory"], root)


def open_restored(root: Path, components: list[Component], *, mode: str = "backup_label") -> S.Server:
    """The restore's second half: the writer's post_restore (backup_label, kept WAL, start, recovery)."""
    socket_dir = S.private_dir("sv-pgr-", owner="postgres")
    port = S.free_port()
    writer = PostgresqlWriter(components[0].instance)
    ctx = RestoreContext(
        components=components,
        target_root=str(root),
        options={"port": port, "socket_dir": str(socket_dir), "postgresql_mode": mode},
    )
    try:
        writer.post_restore(ctx)
    except BaseException:
        shutil.rmtree(socket_dir, ignore_errors=True)
        raise
    datadir = root / components[0].metadata["data_directory"].lstrip("/")
    pid = int((datadir / "postmaster.pid").read_text().split()[0])
    return S.Server("postgresql", datadir, socket_dir, pid=pid, port=port, socket=str(socket_dir))


def check_restored(server: S.Server, must_have: int) -> int:
    """amcheck passes; rows 1..k with no gap, the counter says k, and k covers every acknowledged one."""
    with S.pg_connect(server) as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone()[0] is False
        count, highest = conn.execute("select count(*), coalesce(max(n), 0) from load").fetchone()
        counter = conn.execute("select n from counter").fetchone()[0]
    assert count == highest == counter, (count, highest, counter)
    assert highest >= must_have, f"transaction {must_have} was acknowledged before the freeze but is missing"
    done = subprocess.run(
        [
            S.PG_BIN / "pg_amcheck",
            "-h",
            server.socket,
            "-p",
            str(server.port),
            "-U",
            "postgres",
            "--all",
            "--install-missing",
            "--heapallindexed",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return highest


def test_every_acknowledged_transaction_survives_20_shadow_sets_under_load(pg_on_btrfs):
    fs, pg = pg_on_btrfs
    area = restore_area(fs.mount)
    load = PostgresLoad(pg)
    load.setup()
    load.start()
    try:
        load.wait_for(20)
        for _ in range(ROUNDS):
            root = restore_root(area)
            try:
                with shadow_set(
                    [str(fs.mount)], SetOptions(writers=[f"postgresql:{pg.datadir}"], auto_writers=False)
                ) as manifest:
                    report = report_of(manifest, "postgresql")
                    assert report.state == WriterState.WAITING_FOR_BACKUP_COMPLETE, report.failure
                    component = report.components[0]
                    assert component.consistency == Consistency.APPLICATION
                    assert component.metadata["crash_consistent_alone"] is True
                    assert component.metadata["backup_label"].startswith("START WAL LOCATION")
                    must_have = load.acked_before(freeze_instant(manifest, report))
                    lay_down(manifest, report.components, root)
                restored = open_restored(root, report.components)
                try:
                    assert check_restored(restored, must_have) >= must_have
                finally:
                    close_restored(restored)
            finally:
                remove(root)
        assert len(load.acks) > ROUNDS
    finally:
        load.stop()
    assert not load.errors


def test_kept_wal_is_what_makes_the_copy_open_with_its_backup_label():
    """Without the WAL carried in the manifest, PostgreSQL refuses the backup_label restore."""
    with loop_filesystem("btrfs", 1 << 30) as fs:
        S.open_for_service(fs.mount)
        with S.postgres_server(fs.mount / "pgdata") as pg:  # default 16 MiB WAL segments
            load = PostgresLoad(pg)
            load.setup()
            load.start()
            area = restore_area(fs.mount)
            roots = [restore_root(area), restore_root(area), restore_root(area)]
            try:
                load.wait_for(10)
                with shadow_set(
                    [str(fs.mount)], SetOptions(writers=[f"postgresql:{pg.datadir}"], auto_writers=False)
                ) as manifest:
                    report = report_of(manifest, "postgresql")
                    must_have = load.acked_before(freeze_instant(manifest, report))
                    for root in roots:
                        lay_down(manifest, report.components, root)
                component = report.components[0]
                assert component.metadata["wal"], "the WAL from backup start to stop is kept"
                fields = {f: getattr(component, f) for f in component.__struct_fields__}
                stripped = Component(**{**fields, "metadata": {**component.metadata, "wal": []}})
                with pytest.raises(WriterError, match="did not start"):
                    open_restored(roots[0], [stripped])
                # With the kept WAL it opens, and also by plain crash recovery (one atomic shadow).
                for root, mode in ((roots[1], "backup_label"), (roots[2], "crash")):
                    restored = open_restored(root, [component], mode=mode)
                    try:
                        check_restored(restored, must_have)
                    finally:
                        close_restored(restored)
            finally:
                load.stop()
                for root in roots:
                    remove(root)


def test_reflink_copy_on_xfs_restores_by_backup_label():
    """XFS reflink copies file by file inside the hold: not crash-consistent alone, the label fixes it."""
    with loop_filesystem("xfs", 2 << 30) as fs:
        S.open_for_service(fs.mount)
        with S.postgres_server(fs.mount / "pgdata") as pg:
            load = PostgresLoad(pg)
            load.setup()
            load.start()
            try:
                load.wait_for(10)
                for _ in range(2):
                    root = restore_root()
                    try:
                        with shadow_set(
                            [str(fs.mount)],
                            SetOptions(
                                writers=[f"postgresql:{pg.datadir}"], provider="reflink", auto_writers=False
                            ),
                        ) as manifest:
                            report = report_of(manifest, "postgresql")
                            assert report.failure is None
                            assert report.components[0].metadata["crash_consistent_alone"] is False
                            must_have = load.acked_before(freeze_instant(manifest, report))
                            lay_down(manifest, report.components, root)
                        restored = open_restored(root, report.components)
                        try:
                            check_restored(restored, must_have)
                        finally:
                            close_restored(restored)
                    finally:
                        remove(root)
            finally:
                load.stop()


def test_server_down_names_the_writer_and_aborts(btrfs):
    S.open_for_service(btrfs.mount)
    with S.postgres_server(btrfs.mount / "pgdata") as pg:
        pass  # initialised, then stopped: the data directory is there, the server is not
    with (
        pytest.raises(ShadowError) as err,
        shadow_set([str(btrfs.mount)], SetOptions(writers=[f"postgresql:{pg.datadir}"], auto_writers=False)),
    ):
        pass
    message = str(err.value)
    assert f"writer postgresql:{pg.datadir} failed at prepare_snapshot" in message
    assert "not running" in message


def test_wrong_password_degrades_when_configured(pg_on_btrfs):
    fs, pg = pg_on_btrfs
    writer = PostgresqlWriter(str(pg.datadir), user=S.PG_BACKUP_ROLE, password="wrong", on_failure="degrade")
    assert writer.failure_policy == FailurePolicy.DEGRADE
    with shadow_set([str(fs.mount)], SetOptions(writers=[writer], auto_writers=False)) as manifest:
        report = report_of(manifest, "postgresql")
        assert report.state == WriterState.FAILED_AT_PREPARE_SNAPSHOT
        assert "password authentication failed" in report.failure
        assert report.components[0].consistency == Consistency.CRASH
        assert any("postgresql" in note and "crash-consistent" in note for note in manifest.notes)
    # With the right password the backup role takes part.
    writer = PostgresqlWriter(str(pg.datadir), user=S.PG_BACKUP_ROLE, password=S.PG_BACKUP_PASSWORD)
    with shadow_set([str(fs.mount)], SetOptions(writers=[writer], auto_writers=False)) as manifest:
        assert report_of(manifest, "postgresql").components[0].metadata["backup_label"]


def test_wrong_password_aborts_by_default(pg_on_btrfs):
    fs, pg = pg_on_btrfs
    writer = PostgresqlWriter(str(pg.datadir), user=S.PG_BACKUP_ROLE, password="wrong")
    with (
        pytest.raises(ShadowError, match=r"writer postgresql:.* failed at prepare_snapshot: .*password"),
        shadow_set([str(fs.mount)], SetOptions(writers=[writer], auto_writers=False)),
    ):
        pass
    with S.pg_connect(pg) as conn:  # nothing left behind: no backup in progress
        assert (
            conn.execute(
                "select count(*) from pg_stat_activity where application_name = 'shadowvault'"
            ).fetchone()[0]
            == 0
        )


def test_writers_d_entry_gives_an_instance_its_credentials_and_policy(pg_on_btrfs, cli):
    """`type = "postgresql"` in writers.d: auto-selection and --writer use it; `writers list` shows it."""
    import os

    fs, pg = pg_on_btrfs
    config = Path(os.environ["SHADOWVAULT_CONFIG_DIR"]) / "writers.d" / "pg-main.toml"
    config.write_text(
        f'type = "postgresql"\ninstance = "{pg.datadir}"\nuser = "{S.PG_BACKUP_ROLE}"\n'
        f'password = "wrong"\non_failure = "degrade"\n'
    )
    config.chmod(0o600)
    with shadow_set([str(fs.mount)]) as manifest:  # discovered, and the declared settings win
        report = report_of(manifest, "postgresql")
        assert report.state == WriterState.FAILED_AT_PREPARE_SNAPSHOT
        assert "password authentication failed" in report.failure
    config.write_text(config.read_text().replace('"wrong"', f'"{S.PG_BACKUP_PASSWORD}"'))
    with shadow_set(
        [str(fs.mount)], SetOptions(writers=[f"postgresql:{pg.datadir}"], auto_writers=False)
    ) as manifest:
        assert report_of(manifest, "postgresql").components[0].metadata["backup_label"]
    listed = cli("writers", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert f"postgresql:{pg.datadir}" in listed.stdout


def test_live_provider_is_refused_clearly(pg_on_btrfs):
    """`live` reads the files after the base backup ended: no restorable copy, so the writer says so."""
    fs, pg = pg_on_btrfs
    with (
        pytest.raises(ShadowError, match=r"writer postgresql:.* failed at post_snapshot: the live provider"),
        shadow_set(
            [str(fs.mount)],
            SetOptions(writers=[f"postgresql:{pg.datadir}"], provider="live", auto_writers=False),
        ),
    ):
        pass
    with S.pg_connect(pg) as conn:  # the backup session is gone: a new base backup can start
        conn.execute("select pg_backup_start('after', true)")
        conn.execute("select pg_backup_stop(false)")


def test_too_much_wal_is_left_out_and_the_copy_opens_by_crash_recovery(pg_on_btrfs):
    fs, pg = pg_on_btrfs
    area = restore_area(fs.mount)
    load = PostgresLoad(pg)
    load.setup()
    load.start()
    root = restore_root(area)
    try:
        load.wait_for(10)
        writer = PostgresqlWriter(str(pg.datadir), wal_max_bytes=1)
        with shadow_set([str(fs.mount)], SetOptions(writers=[writer], auto_writers=False)) as manifest:
            report = report_of(manifest, "postgresql")
            component = report.components[0]
            assert component.metadata["wal"] is None and "crash recovery" in component.metadata["wal_note"]
            must_have = load.acked_before(freeze_instant(manifest, report))
            lay_down(manifest, report.components, root)
        restored = open_restored(root, report.components, mode="auto")
        try:
            check_restored(restored, must_have)
        finally:
            close_restored(restored)
    finally:
        load.stop()
        remove(root)


def test_cli_shadow_set_with_the_writer_and_one_line_when_the_server_is_down(cli):
    with loop_filesystem("btrfs", 1 << 30) as fs:
        S.open_for_service(fs.mount)
        with S.postgres_server(fs.mount / "pgdata", wal_segsize_mb=1) as pg:
            done = cli(
                "shadows",
                "create",
                "--volume",
                str(fs.mount),
                "--writer",
                f"postgresql:{pg.datadir}",
                "--no-auto-writers",
                "--auto-release",
                "--json",
            )
            assert done.returncode == 0, done.stderr
            assert "backup_label" in done.stdout and "START WAL LOCATION" in done.stdout
        done = cli(
            "shadows",
            "create",
            "--volume",
            str(fs.mount),
            "--writer",
            f"postgresql:{pg.datadir}",
            "--no-auto-writers",
            "--auto-release",
        )
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert f"writer postgresql:{pg.datadir} failed at prepare_snapshot" in lines[0]
        assert "not running" in lines[0]


def test_restore_in_place_stops_the_cluster_sets_it_aside_and_brings_back_the_backup(pg_on_btrfs):
    """STOP_RESTORE_START on the original location, from a repository: the later data is set aside."""
    from shadowvault.jobs.backup import BackupRequest, run_backup
    from shadowvault.jobs.restore_writer import restore_with_writers
    from tests.archive.helpers import new_repo

    fs, pg = pg_on_btrfs
    load = PostgresLoad(pg)
    load.setup()
    load.start()
    with loop_filesystem("btrfs") as other:
        try:
            load.wait_for(10)
            repo = new_repo(other.mount / "repo")
            result = run_backup(repo, BackupRequest(paths=[str(pg.datadir)]))
            done = len(load.acks)
            load.wait_for(done + 20)  # committed after the backup: must not come back
        finally:
            load.stop()
        from shadowvault.jobs.writer_plan import load_manifest

        report = report_of(load_manifest(repo, result.snapshot), "postgresql")
        must_have = load.acked_before(report.components[0].metadata["freeze_started"])
        last = load.acks[-1].n
        restore_with_writers(repo, result.snapshot, "/")
    new_pid = int((pg.datadir / "postmaster.pid").read_text().split()[0])
    try:
        assert new_pid != pg.pid and not pg.running  # pre_restore stopped the old one
        highest = check_restored(pg, must_have)
        assert highest < last, "the restored cluster is at the backup's point, not later"
        aside = [p for p in fs.mount.iterdir() if p.name.startswith("pgdata.pre-restore-")]
        assert len(aside) == 1 and (aside[0] / "PG_VERSION").exists(), "the replaced data was kept"
    finally:
        S.stop_pid(new_pid, signal.SIGINT)


def test_tablespace_is_part_of_the_component_and_restored_elsewhere_points_at_its_own_copy(pg_on_btrfs):
    fs, pg = pg_on_btrfs
    space = fs.mount / "space"
    space.mkdir()
    shutil.chown(space, "postgres", "postgres")
    with S.pg_connect(pg) as conn:
        conn.execute(f"create tablespace extra location '{space}'")
        conn.execute("create table spaced (n int) tablespace extra")
        conn.execute("insert into spaced select generate_series(1, 1000)")
        conn.execute("create table load (n int primary key)")  # what check_restored reads
        conn.execute("create table counter (n int)")
        conn.execute("insert into counter values (0)")
    area = restore_area(fs.mount)
    root = restore_root(area)
    try:
        with shadow_set(
            [str(fs.mount)], SetOptions(writers=[f"postgresql:{pg.datadir}"], auto_writers=False)
        ) as manifest:
            report = report_of(manifest, "postgresql")
            component = report.components[0]
            assert str(space) in component.paths
            assert str(space) in component.metadata["tablespace_map"]
            lay_down(manifest, report.components, root)
            copy_out(manifest, str(space), root)
        before = sorted(p.name for p in space.rglob("*"))
        restored = open_restored(root, report.components)
        try:
            with S.pg_connect(restored) as conn:
                assert conn.execute("select count(*) from spaced").fetchone()[0] == 1000
            links = list((restored.datadir / "pg_tblspc").iterdir())
            assert [os.readlink(link) for link in links] == [str(root / str(space).lstrip("/"))]
        finally:
            close_restored(restored)
        assert sorted(p.name for p in space.rglob("*")) == before, "the live tablespace was not touched"
    finally:
        remove(root)
