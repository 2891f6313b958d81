"""The coordinator on real filesystems: the sequence, its timeouts, aborts and consistency grades."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from shadowvault.errors import ShadowError, UnsupportedError, UsageError
from shadowvault.shadow.coordinator import SetOptions, create_shadow_set, shadow_path, shadow_set
from shadowvault.shadow.manifest import Consistency, WriterState
from shadowvault.shadow.providers.live import LiveProvider
from shadowvault.shadow.store import ShadowStore
from tests.shadow.frozen_probe import write_completes
from tests.shadow.test_writers import make_db, write_config, write_script


def rows(db: Path) -> int:
    """Rows of the test table in a copy of a database (the shadow is read-only)."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        conn.close()


def copy_db(src: str, dest: Path) -> Path:
    dest.mkdir()
    for suffix in ("", "-wal"):
        if os.path.exists(src + suffix):
            shutil.copy(src + suffix, dest / ("app.db" + suffix))
    return dest / "app.db"


def lock_free(db: Path) -> bool:
    """No one holds the database's write lock."""
    conn = sqlite3.connect(db, timeout=0.5)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.rollback()
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def leftover_shadows(mount: Path) -> list[str]:
    hidden = mount / ".shadowvault"
    return os.listdir(hidden) if hidden.is_dir() else []


def test_btrfs_set_with_sqlite_writer_holds_the_committed_state(btrfs, tmp_path):
    db = btrfs.mount / "app.db"
    make_db(db, "wal")
    (btrfs.mount / "notes.txt").write_text("before")
    with shadow_set([str(btrfs.mount)], SetOptions(writers=[f"sqlite:{db}"])) as manifest:
        (btrfs.mount / "notes.txt").write_text("after")
        live = sqlite3.connect(db)
        live.execute("INSERT INTO t VALUES (5000)")
        live.commit()
        live.close()
        assert manifest.state == "created"
        assert ShadowStore().load(manifest.id).state == "created"
        shadowed = shadow_path(manifest, str(db))
        assert rows(copy_db(shadowed, tmp_path / "copy")) == 100
        assert Path(shadow_path(manifest, str(btrfs.mount / "notes.txt"))).read_text() == "before"
        [report] = manifest.writers
        assert report.state == WriterState.WAITING_FOR_BACKUP_COMPLETE
        assert report.components[0].consistency == Consistency.APPLICATION
        assert set(report.timings) >= {"identify", "prepare_snapshot", "freeze", "thaw"}
        assert manifest.freeze_window is not None and manifest.frozen_at is not None
        assert set(manifest.phases) >= {"freeze", "commit", "thaw"}
    assert ShadowStore().list() == []
    assert leftover_shadows(btrfs.mount) == []


def test_reflink_set_copies_inside_the_hold(xfs, tmp_path):
    db = xfs.mount / "app.db"
    make_db(db, "wal")
    with shadow_set([str(xfs.mount)], SetOptions(writers=[f"sqlite:{db}"], provider="reflink")) as manifest:
        assert rows(copy_db(shadow_path(manifest, str(db)), tmp_path / "copy")) == 100
        assert manifest.writers[0].components[0].consistency == Consistency.APPLICATION
        assert any("not atomic" in note for note in manifest.notes)
    assert leftover_shadows(xfs.mount) == []


def test_writer_timing_out_at_freeze_aborts_and_releases_everything(private_dirs, btrfs, tmp_path):
    db = btrfs.mount / "app.db"
    make_db(db, "wal")
    thawed = tmp_path / "thaw-ran"
    slow = write_script(tmp_path / "slow.sh", "exec sleep 30")
    thaw = write_script(tmp_path / "thaw.sh", f"touch {thawed}")
    write_config(private_dirs / "config", "slow", f'freeze = ["{slow}"]\nthaw = ["{thaw}"]\n')
    started = time.monotonic()
    with pytest.raises(ShadowError, match=r"writer script:slow timed out at freeze after 1\.5 s") as caught:
        create_shadow_set(
            [str(btrfs.mount)], SetOptions(writers=[f"sqlite:{db}", "script:slow"], freeze_timeout=1.5)
        )
    assert time.monotonic() - started < 25  # the sleep was killed, not waited for
    manifest = caught.value.manifest
    assert manifest.state == "aborted"
    states = {r.name: r.state for r in manifest.writers}
    assert states["script"] == WriterState.TIMED_OUT
    assert thawed.exists(), "the script writer's thaw did not run on abort"
    assert lock_free(db), "the sqlite writer still holds its lock"
    assert ShadowStore().list() == [] and leftover_shadows(btrfs.mount) == []


def test_writer_crashing_at_freeze_aborts_with_its_name(private_dirs, xfs, tmp_path):
    crash = write_script(tmp_path / "crash.sh", "echo 'cannot quiesce' >&2; exit 1")
    write_config(private_dirs / "config", "crash", f'freeze = ["{crash}"]\n')
    with pytest.raises(
        ShadowError,
        match="writer script:crash failed at freeze: freeze command exited with status 1: cannot quiesce",
    ) as caught:
        create_shadow_set([str(xfs.mount)], SetOptions(writers=["fsfreeze", "script:crash"], provider="live"))
    assert caught.value.manifest.state == "aborted"
    assert write_completes(xfs.mount)
    assert ShadowStore().list() == []


def test_sqlite_writer_that_cannot_get_the_lock_aborts_within_the_freeze_timeout(btrfs):
    db = btrfs.mount / "app.db"
    make_db(db, "wal")
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # a long write transaction that will not end in time
    try:
        with pytest.raises(ShadowError, match=f"writer sqlite:{db} (timed out|failed) at freeze"):
            create_shadow_set([str(btrfs.mount)], SetOptions(writers=[f"sqlite:{db}"], freeze_timeout=1))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert lock_free(db) and ShadowStore().list() == []


def test_degrading_writer_leaves_its_data_crash_consistent(private_dirs, btrfs, tmp_path):
    crash = write_script(tmp_path / "crash.sh", "exit 1")
    write_config(
        private_dirs / "config",
        "flaky",
        f'freeze = ["{crash}"]\non_failure = "degrade"\npaths = ["{btrfs.mount}/data"]\n',
    )
    with shadow_set([str(btrfs.mount)]) as manifest:  # writers.d writers are selected automatically
        [report] = manifest.writers
        assert report.state == WriterState.FAILED_AT_FREEZE
        assert report.components[0].consistency == Consistency.CRASH
        assert "exited with status 1" in report.components[0].reason
        assert any("script:flaky failed" in note for note in manifest.notes)


def test_provider_failing_at_commit_aborts_and_releases_writers(btrfs):
    db = btrfs.mount / "app.db"
    make_db(db, "wal")
    (btrfs.mount / ".shadowvault").write_text("in the way")  # the snapshot directory cannot be made
    with pytest.raises(ShadowError, match=f"provider btrfs failed at commit on {btrfs.mount}: ") as caught:
        create_shadow_set([str(btrfs.mount)], SetOptions(writers=[f"sqlite:{db}"]))
    assert caught.value.manifest.state == "aborted"
    assert caught.value.manifest.writers[0].state == WriterState.ABORTED
    assert lock_free(db)
    assert ShadowStore().list() == []


class HungProvider(LiveProvider):
    """A provider whose commit never returns in time (a hung storage array, say)."""

    name = "hung"

    def create(self, volume, set_id, index, *scope):
        time.sleep(5)
        return super().create(volume, set_id, index, *scope)


def test_provider_timing_out_at_commit_aborts(xfs):
    db = xfs.mount / "app.db"
    make_db(db, "wal")
    with pytest.raises(ShadowError, match=r"provider hung timed out at commit on .* after 0\.5 s"):
        create_shadow_set(
            [str(xfs.mount)],
            SetOptions(writers=[f"sqlite:{db}", "fsfreeze"], provider=HungProvider(), commit_timeout=0.5),
        )
    assert write_completes(xfs.mount)
    assert lock_free(db)


def test_fsfreeze_with_btrfs_is_refused_naming_both(btrfs):
    with pytest.raises(UsageError, match="writer fsfreeze cannot be used with provider btrfs"):
        create_shadow_set([str(btrfs.mount)], SetOptions(writers=["fsfreeze"]))
    assert write_completes(btrfs.mount)


def test_fsfreeze_with_live_is_allowed_and_says_it_adds_nothing(xfs):
    with shadow_set([str(xfs.mount)], SetOptions(writers=["fsfreeze"], provider="live")) as manifest:
        assert manifest.writers[0].state == WriterState.WAITING_FOR_BACKUP_COMPLETE
        assert any("fsfreeze with the live provider adds nothing" in note for note in manifest.notes)
        assert manifest.writers[0].components[0].consistency == Consistency.NONE
        assert write_completes(xfs.mount)


def test_writer_data_outside_the_set_is_refused(btrfs, xfs):
    db = xfs.mount / "app.db"
    make_db(db, "wal")
    with pytest.raises(UsageError, match=f"lies on {xfs.mount}, which is not in the shadow set"):
        create_shadow_set([str(btrfs.mount)], SetOptions(writers=[f"sqlite:{db}"]))


def test_unsupported_provider_is_refused(ext4):
    with pytest.raises(UnsupportedError, match="not btrfs"):
        create_shadow_set([str(ext4.mount)], SetOptions(writers=[], provider="btrfs"))


def test_persistent_set_stays_until_released(btrfs):
    manifest = create_shadow_set([str(btrfs.mount)], SetOptions(persistent=True))
    stored = ShadowStore().load(manifest.id)
    assert stored.persistent and stored.requester_pid is None and stored.state == "created"
    assert os.path.isdir(manifest.shadows[0].path)
    ShadowStore().release(manifest.id)
    assert leftover_shadows(btrfs.mount) == []
