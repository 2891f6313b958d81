"""The writers on real filesystems: fsfreeze, sqlite, script (and writers.d's permission rules)."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from shadowvault.errors import ConfigError, UsageError
from shadowvault.shadow.volumes import find_volume
from shadowvault.shadow.writers import registry
from shadowvault.shadow.writers.base import FailurePolicy, RunCommand, SnapshotContext, ThawFilesystem
from shadowvault.shadow.writers.fsfreeze import FsfreezeWriter
from shadowvault.shadow.writers.sqlite import SqliteWriter
from tests.fixtures.loopfs import thaw_quietly
from tests.shadow.frozen_probe import is_blocked, start_write, write_completes

NOBODY = 65534


def context(*mounts: Path) -> SnapshotContext:
    return SnapshotContext(set_id="test", volumes=[find_volume(str(m)) for m in mounts])


def write_script(path: Path, body: str, mode: int = 0o700) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(mode)
    return path


def write_config(config_dir: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = config_dir / "writers.d" / f"{name}.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("fstype", ["xfs", "ext4"])
def test_fsfreeze_blocks_writes_until_thaw(request, fstype):
    fs = request.getfixturevalue(fstype)
    writer = FsfreezeWriter(str(fs.mount))
    ctx = context(fs.mount)
    writer.prepare_backup(ctx)
    assert writer.watchdog_actions() == [ThawFilesystem(path=str(fs.mount))]
    writer.prepare_snapshot(ctx)
    child = None
    try:
        writer.freeze(ctx)
        child = start_write(fs.mount)
        assert is_blocked(child), "a write to the frozen filesystem did not block"
    finally:
        writer.thaw(ctx)
        thaw_quietly(fs.mount)
    assert child.wait(timeout=20) == 0
    assert (fs.mount / "probe").read_bytes() == b"x"


def test_fsfreeze_refuses_the_root_filesystem():
    writer = FsfreezeWriter("/")
    with pytest.raises(UsageError, match="refusing to freeze /: it holds the root filesystem"):
        writer.prepare_backup(context(Path("/")))


def test_fsfreeze_refuses_the_volume_holding_the_state_dir(xfs, monkeypatch):
    monkeypatch.setenv("SHADOWVAULT_STATE_DIR", str(xfs.mount / "state"))
    writer = FsfreezeWriter(str(xfs.mount))
    with pytest.raises(UsageError, match=f"refusing to freeze {xfs.mount}: it holds the state directory"):
        writer.prepare_backup(context(xfs.mount))
    assert write_completes(xfs.mount)


def test_fsfreeze_instance_must_be_in_the_set(xfs, ext4):
    writer = FsfreezeWriter(str(xfs.mount))
    with pytest.raises(UsageError, match="is not a volume of this shadow set"):
        writer.prepare_backup(context(ext4.mount))


def make_db(path: Path, journal_mode: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1, 101)])
    conn.commit()
    conn.close()


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_sqlite_writer_holds_writers_but_not_readers(ext4, journal_mode):
    db = ext4.mount / "app.db"
    make_db(db, journal_mode)
    writer = SqliteWriter(str(db))
    ctx = context(ext4.mount)
    [component] = writer.identify()
    assert component.kind == "database" and str(db) in component.paths and f"{db}-wal" in component.paths
    writer.prepare_snapshot(ctx)
    writer.freeze(ctx)
    try:
        other = sqlite3.connect(db, timeout=0.2)
        assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 100  # readers go on
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("INSERT INTO t VALUES (1000)")
            other.commit()
        other.rollback()
    finally:
        writer.thaw(ctx)
    other.execute("INSERT INTO t VALUES (1000)")
    other.commit()
    assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 101
    other.close()


def test_sqlite_wal_is_checkpointed_at_prepare_snapshot(ext4):
    db = ext4.mount / "app.db"
    make_db(db, "wal")
    keep = sqlite3.connect(db)  # keeps the -wal from being removed on close
    keep.execute("INSERT INTO t VALUES (500)")
    keep.commit()
    assert os.path.getsize(f"{db}-wal") > 0
    writer = SqliteWriter(str(db))
    writer.prepare_snapshot(context(ext4.mount))
    assert os.path.getsize(f"{db}-wal") == 0
    writer.thaw(context(ext4.mount))
    keep.close()


def test_script_writer_runs_freeze_and_thaw(private_dirs, tmp_path):
    marker = tmp_path / "frozen"
    freeze = write_script(tmp_path / "freeze.sh", f'echo "$SHADOWVAULT_PHASE $SHADOWVAULT_SET_ID" > {marker}')
    thaw = write_script(tmp_path / "thaw.sh", f"rm {marker}")
    write_config(private_dirs / "config", "app", f'freeze = ["{freeze}"]\nthaw = ["{thaw}"]\ntimeout = 5\n')
    writer = registry.make_writer("script:app")
    assert writer.label == "script:app" and writer.timeout == 5
    expected = RunCommand(argv=[str(thaw)], timeout=5.0, env={"SHADOWVAULT_PHASE": "thaw"})
    assert writer.watchdog_actions() == [expected]
    ctx = SnapshotContext(set_id="set-1", volumes=[])
    writer.freeze(ctx)
    assert marker.read_text() == "freeze set-1\n"
    writer.thaw(ctx)
    assert not marker.exists()
    assert registry.make_writer("app").label == "script:app"


def test_script_writer_failure_names_the_command_and_status(private_dirs, tmp_path):
    crash = write_script(tmp_path / "crash.sh", "echo 'database refused' >&2; exit 3")
    write_config(private_dirs / "config", "crashy", f'freeze = ["{crash}"]\non_failure = "degrade"\n')
    writer = registry.make_writer("script:crashy")
    assert writer.failure_policy == FailurePolicy.DEGRADE
    with pytest.raises(Exception, match="freeze command exited with status 3: database refused"):
        writer.freeze(SnapshotContext(set_id="s", volumes=[]))


def test_group_writable_config_is_refused(private_dirs, tmp_path, cli):
    freeze = write_script(tmp_path / "freeze.sh", "true")
    path = write_config(private_dirs / "config", "loose", f'freeze = ["{freeze}"]\n', mode=0o664)
    with pytest.raises(ConfigError, match="must not be writable by group or others"):
        registry.configured_writers()
    done = cli("writers", "list", "--json")
    assert done.returncode == 0
    assert '"state":"refused"' in done.stdout and str(path) in done.stdout


def test_script_not_owned_by_root_is_refused(private_dirs, tmp_path, cli, xfs):
    script = write_script(tmp_path / "freeze.sh", "true", mode=0o755)
    os.chown(script, NOBODY, NOBODY)
    write_config(private_dirs / "config", "app", f'freeze = ["{script}"]\n')
    with pytest.raises(ConfigError, match=f"{script}: refused: the freeze program must be owned by root"):
        registry.make_writer("script:app")
    done = cli("shadows", "create", "--volume", str(xfs.mount), "--writer", "script:app")
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "must be owned by root (it is owned by uid 65534)" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (xfs.mount / ".shadowvault").exists() or not os.listdir(xfs.mount / ".shadowvault")


def test_timeout_above_maximum_is_refused(private_dirs, tmp_path):
    freeze = write_script(tmp_path / "freeze.sh", "true")
    write_config(private_dirs / "config", "slow", f'freeze = ["{freeze}"]\ntimeout = 3600\n')
    with pytest.raises(ConfigError, match="above the maximum of 1800 s"):
        registry.make_writer("script:slow")


def test_unknown_writer_lists_the_valid_ones():
    with pytest.raises(UsageError, match=r"unknown writer 'nosuch'.*fsfreeze.*sqlite"):
        registry.make_writer("nosuch:x")


def test_registered_sqlite_databases_are_discovered(private_dirs, ext4, xfs):
    db = ext4.mount / "app.db"
    make_db(db, "wal")
    config = private_dirs / "config" / "sqlite.toml"
    config.write_text(f'databases = ["{db}"]\n')
    config.chmod(stat.S_IRUSR | stat.S_IWUSR)
    found = registry.discover_writers([find_volume(str(ext4.mount))])
    assert [w.label for w in found] == [f"sqlite:{db}"]
    assert registry.discover_writers([find_volume(str(xfs.mount))]) == []


def test_writers_list_shows_builtin_configured_and_discovered(private_dirs, tmp_path, ext4, cli):
    import json

    db = ext4.mount / "app.db"
    make_db(db, "wal")
    (private_dirs / "config" / "sqlite.toml").write_text(f'databases = ["{db}"]\n')
    freeze = write_script(tmp_path / "freeze.sh", "true")
    write_config(private_dirs / "config", "app", f'freeze = ["{freeze}"]\npaths = ["/srv/app"]\n')
    done = cli("writers", "list", "--json")
    assert done.returncode == 0, done.stderr
    entries = {(e["writer"], e["kind"]): e for e in json.loads(done.stdout)}
    assert {("fsfreeze", "builtin"), ("script", "builtin"), ("sqlite", "builtin")} <= set(entries)
    assert entries[("script:app", "configured")]["state"] == "stable"
    assert entries[("script:app", "configured")]["components"][0]["paths"] == ["/srv/app"]
    discovered = entries[(f"sqlite:{db}", "discovered")]
    assert discovered["state"] == "stable" and str(db) in discovered["components"][0]["paths"]
    human = cli("writers", "list")
    assert f"writer: sqlite:{db}" in human.stdout and "component: app.db (database)" in human.stdout


def test_sqlite_database_declared_in_writers_d_is_discovered(private_dirs, ext4):
    db = ext4.mount / "app.db"
    make_db(db, "wal")
    write_config(private_dirs / "config", "appdb", f'type = "sqlite"\ndatabase = "{db}"\n')
    found = registry.discover_writers([find_volume(str(ext4.mount))])
    assert [w.label for w in found] == [f"sqlite:{db}"]
    assert registry.make_writer("appdb").label == f"sqlite:{db}"


def test_samba_writer_declared_in_writers_d_brings_its_method(private_dirs):
    """`type = "samba"` is a writers.d type like the other application writers (method = "online")."""
    write_config(
        private_dirs / "config",
        "dc",
        'type = "samba"\ninstance = "/srv/dc/etc/smb.conf"\nmethod = "online"\n',
    )
    for spec in ("dc", "samba:/srv/dc/etc/smb.conf"):
        writer = registry.make_writer(spec)
        assert writer.label == "samba:/srv/dc/etc/smb.conf"
        assert writer.options["method"] == "online"
