"""The fanotify provider on loop ext4: a user-space copy-on-write shadow that reads as the point in time.

Every test changes the volume after the shadow was made, in the ways applications do (in place,
truncated by ftruncate and by O_TRUNC, appended, replaced by rename, renamed, deleted, chmod), while
a write load runs, and then reads the shadow's view as a backup would.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.shadow import validity
from shadowvault.shadow.coordinator import SetOptions, create_shadow_set, shadow_path, shadow_set
from shadowvault.shadow.providers.base import FreezePolicy
from shadowvault.shadow.providers.fanotify import FanotifyProvider, base_dir
from shadowvault.shadow.providers.fanotify_process import listener_alive
from shadowvault.shadow.providers.registry import choose_provider, supported_providers, volume_report
from shadowvault.shadow.store import ShadowStore
from shadowvault.shadow.validity import ShadowInvalidError
from shadowvault.shadow.volumes import find_volume
from tests.fixtures.loopfs import LoopFs, loop_filesystem

FANOTIFY = SetOptions(provider="fanotify", writers=["fsfreeze"])


@pytest.fixture
def big_ext4() -> Iterator[LoopFs]:
    with loop_filesystem("ext4", size=1 << 30) as fs:
        yield fs


def _digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _tree(root: str | Path) -> dict[str, tuple[int, str]]:
    """Every file and symlink below `root`: relative path -> (mode, sha256 or link target)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("lost+found", ".shadowvault")]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            what = os.readlink(path) if stat.S_ISLNK(st.st_mode) else _digest(path)
            found[os.path.relpath(path, root)] = (st.st_mode, what)
    return found


class WriteLoad:
    """A separate process rewriting files of the volume all along: one held open, one reopened each time.

    Each block it writes is 4 KiB of one repeated counter value, so any point in time shows whole blocks.
    """

    SCRIPT = """
import os, sys, time
held = os.open(sys.argv[1] + "/load-held.bin", os.O_RDWR | os.O_CREAT, 0o644)
n = 0
while True:
    n += 1
    block = (b"%08d" % n) * 512
    os.pwrite(held, block, (n % 16) * 4096)
    fd = os.open(sys.argv[1] + "/load-reopened.bin", os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, block, (n % 16) * 4096)
    os.close(fd)
    print(n, flush=True)
    time.sleep(0.001)
"""

    def __init__(self, mount: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, str(mount)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.last = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        while self.last < 50:
            time.sleep(0.01)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.last = int(line)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _whole_blocks(path: str) -> list[int]:
    data = Path(path).read_bytes()
    assert len(data) % 4096 == 0
    values = []
    for i in range(0, len(data), 4096):
        block = data[i : i + 4096]
        assert block == block[:8] * 512, f"a torn block at {i} in {path}"
        values.append(int(block[:8]))
    return values


def _populate(root: Path) -> None:
    (root / "docs").mkdir()
    (root / "docs" / "modified.txt").write_bytes(b"m" * 10000)
    (root / "docs" / "ftruncated.txt").write_bytes(b"f" * 100000)
    (root / "docs" / "otrunc.txt").write_bytes(b"o" * 5000)
    (root / "docs" / "appended.log").write_bytes(b"line\n" * 1000)
    (root / "docs" / "replaced.conf").write_bytes(b"old config\n")
    (root / "docs" / "renamed.txt").write_bytes(b"renamed later\n")
    (root / "docs" / "deleted.bin").write_bytes(os.urandom(300000))
    (root / "docs" / "chmodded.sh").write_bytes(b"#!/bin/sh\n")
    (root / "docs" / "mapped.bin").write_bytes(b"page" * 16384)
    os.chmod(root / "docs" / "chmodded.sh", 0o755)
    os.link(root / "docs" / "modified.txt", root / "docs" / "hardlink.txt")
    os.symlink("modified.txt", root / "docs" / "symlink")
    (root / "empty-dir").mkdir()


def _change(root: Path) -> None:
    """Change every file of _populate the ways applications do."""
    d = root / "docs"
    with open(d / "modified.txt", "r+b") as f:
        f.seek(5000)
        f.write(b"NEW")
        f.flush()
        os.pwrite(f.fileno(), b"SPANS", 4094)  # across a page boundary: both pages saved first
    with open(d / "ftruncated.txt", "r+b") as f:
        f.truncate(10)
    with open(d / "otrunc.txt", "wb") as f:  # O_WRONLY | O_CREAT | O_TRUNC
        f.write(b"short")
    with open(d / "appended.log", "ab") as f:
        f.write(b"appended\n" * 100)
    with open(d / "mapped.bin", "r+b") as f, mmap.mmap(f.fileno(), 0) as mapped:
        assert mapped[40000:40004] == b"page"  # a read fault first, then a write to the mapped page
        mapped[40000:40005] = b"WRITE"
        mapped.flush()
    (d / "replaced.conf.tmp").write_bytes(b"new config\n")
    os.replace(d / "replaced.conf.tmp", d / "replaced.conf")
    os.rename(d / "renamed.txt", d / "renamed-now.txt")
    os.unlink(d / "deleted.bin")
    os.chmod(d / "chmodded.sh", 0o600)
    (d / "created-after.txt").write_bytes(b"not in the shadow")
    os.rmdir(root / "empty-dir")


def test_fanotify_serves_ext4_and_auto_picks_it(ext4, btrfs, xfs):
    volume = find_volume(str(ext4.mount))
    assert supported_providers(volume) == ["fanotify", "live"]
    assert choose_provider(volume).name == "fanotify"
    assert volume_report(volume)["providers"] == ["fanotify", "live"]
    assert choose_provider(find_volume(str(btrfs.mount))).name == "btrfs"
    assert choose_provider(find_volume(str(xfs.mount))).name == "reflink"
    assert FanotifyProvider.freeze_policy == FreezePolicy.NEEDS and FanotifyProvider.atomic


def test_changes_after_the_instant_read_as_they_were_under_a_write_load(ext4):
    _populate(ext4.mount)
    before = _tree(ext4.mount)
    load = WriteLoad(ext4.mount)
    try:
        with shadow_set([str(ext4.mount)], FANOTIFY) as manifest:
            [shadow] = manifest.shadows
            assert shadow.provider == "fanotify" and shadow.atomic and shadow.frozen
            _change(ext4.mount)
            started = load.last
            while load.last < started + 100:  # the load goes on rewriting both of its files
                time.sleep(0.01)
            latest = load.last
            view = shadow.path
            seen = _tree(view)
            for name in ("load-held.bin", "load-reopened.bin"):
                values = _whole_blocks(shadow_path(manifest, str(ext4.mount / name)))
                assert max(values) < latest - 50, f"{name} shows writes made after the shadow"
                assert _whole_blocks(str(ext4.mount / name)) != values
            assert any("open for writing at the instant" in note for note in shadow.notes)
            assert os.readlink(f"{view}/docs/symlink") == "modified.txt"
            assert os.listdir(f"{view}/empty-dir") == []
            assert not os.path.exists(f"{view}/docs/created-after.txt")
            held = os.stat(f"{view}/docs/modified.txt")
            assert held.st_nlink == 2 and held.st_ino == os.stat(f"{view}/docs/hardlink.txt").st_ino
            with pytest.raises(OSError) as refused:
                Path(view, "docs", "modified.txt").write_bytes(b"x")
            assert refused.value.errno in (errno.EROFS, errno.EACCES)
    finally:
        load.stop()
    expected = {k: v for k, v in before.items() if not k.startswith("load-")}
    assert {k: v for k, v in seen.items() if not k.startswith("load-")} == expected
    assert not os.path.exists(view)
    assert os.listdir(base_dir()) == []


def test_without_fsfreeze_the_listener_freezes_for_its_instant(ext4):
    _populate(ext4.mount)
    before = _tree(ext4.mount)
    manifest = create_shadow_set([str(ext4.mount)], SetOptions())  # auto: fanotify, no fsfreeze writer
    try:
        [shadow] = manifest.shadows
        assert shadow.provider == "fanotify" and shadow.frozen
        _change(ext4.mount)
        assert _tree(shadow.path) == before
        (ext4.mount / "writable.txt").write_text("the volume is thawed")
    finally:
        ShadowStore().release(manifest.id)
    assert not listener_alive(shadow)


def _sqlite_insert(conn: sqlite3.Connection, n: int) -> None:
    with conn:
        conn.execute("INSERT INTO t (n, pad) VALUES (?, randomblob(300))", (n,))
        conn.execute("UPDATE counter SET n = ?", (n,))


def _make_db(path: Path, journal: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, pad BLOB)")
    conn.execute("CREATE TABLE counter (n INTEGER)")
    conn.execute("INSERT INTO counter VALUES (0)")
    conn.commit()
    return conn


def _check_copy(view_db: str, dest: Path) -> tuple[int, int]:
    """Copy a database (and its -wal) out of the shadow; (rows, counter) after integrity_check."""
    dest.mkdir()
    for suffix in ("", "-wal"):
        if os.path.exists(view_db + suffix):
            (dest / f"db{suffix}").write_bytes(Path(view_db + suffix).read_bytes())
    conn = sqlite3.connect(dest / "db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count, top = conn.execute("SELECT count(*), max(n) FROM t").fetchone()
        assert count == top or (count == 0 and top is None), "a gap in the committed transactions"
        return count, conn.execute("SELECT n FROM counter").fetchone()[0]
    finally:
        conn.close()


def test_sqlite_written_during_the_shadow_reads_as_of_the_instant(big_ext4, tmp_path):
    ext4 = big_ext4
    wal_db, journal_db = ext4.mount / "wal.db", ext4.mount / "journal.db"
    held = _make_db(wal_db, "wal")  # kept open across the instant: saved whole at commit
    _make_db(journal_db, "delete").close()  # written after the instant by new connections: by ranges
    acks: list[tuple[int, float]] = []
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            _sqlite_insert(held, n)
            acks.append((n, time.time()))
            time.sleep(0.001)

    thread = threading.Thread(target=load, daemon=True)
    for n in range(1, 501):
        conn = sqlite3.connect(journal_db)
        _sqlite_insert(conn, n)
        conn.close()
    thread.start()
    try:
        while len(acks) < 200:
            time.sleep(0.01)
        options = SetOptions(provider="fanotify", writers=[f"sqlite:{wal_db}", f"sqlite:{journal_db}"])
        with shadow_set([str(ext4.mount)], options) as manifest:
            frozen_at = manifest.frozen_at
            assert frozen_at is not None
            for n in range(501, 1501):
                conn = sqlite3.connect(journal_db)
                _sqlite_insert(conn, n)
                conn.close()
            conn = sqlite3.connect(journal_db)
            conn.execute("DELETE FROM t WHERE n % 3 = 0")
            conn.commit()
            conn.execute("VACUUM")
            conn.close()
            started = len(acks)
            while len(acks) < started + 300:
                time.sleep(0.01)
            wal_rows, wal_counter = _check_copy(shadow_path(manifest, str(wal_db)), tmp_path / "wal")
            journal_rows, journal_counter = _check_copy(
                shadow_path(manifest, str(journal_db)), tmp_path / "journal"
            )
    finally:
        stop.set()
        thread.join()
        held.close()
    acked_before_freeze = max(n for n, at in acks if at < frozen_at)
    assert wal_rows == wal_counter >= acked_before_freeze
    assert wal_rows < len(acks)  # the load went on after the shadow; none of that is in it
    assert journal_rows == journal_counter == 500


def test_ten_thousand_files_and_a_large_file(big_ext4):
    root = big_ext4.mount
    for d in range(100):
        (root / f"d{d:02}").mkdir()
        for f in range(100):
            (root / f"d{d:02}" / f"f{f:02}").write_bytes(b"%d/%d\n" % (d, f) * (1 + f))
    with open(root / "large.bin", "wb") as f:
        for _ in range(256):
            f.write(os.urandom(1 << 20))
    small_before = {p: p.read_bytes() for p in (root / "d07").iterdir()}
    large_before = _digest(root / "large.bin")
    with shadow_set([str(root)], FANOTIFY) as manifest:
        [shadow] = manifest.shadows
        assert shadow.provider_data["files"] == 10001
        with open(root / "large.bin", "r+b") as f:
            for offset in range(0, 256 << 20, 16 << 20):  # 16 scattered writes: 16 chunks saved, not 256 MiB
                f.seek(offset + 12345)
                f.write(b"changed")
        saved = sum(e.stat().st_blocks * 512 for e in os.scandir(shadow.path + ".cow"))
        assert saved <= 16 * (64 << 10)
        for p in (root / "d07").iterdir():
            p.write_bytes(b"rewritten")
        for d in range(50, 100):
            os.rename(root / f"d{d:02}", root / f"moved{d:02}")
        view = Path(shadow.path)
        assert _digest(view / "large.bin") == large_before
        assert {p.name: p.read_bytes() for p in (view / "d07").iterdir()} == {
            p.name: data for p, data in small_before.items()
        }
        assert sum(len(files) for _, _, files in os.walk(view)) == 10001
        with open(root / "large.bin", "r+b") as f:
            f.truncate(0)  # a truncation saves the rest of the file whole first
        assert _digest(view / "large.bin") == large_before


def test_a_killed_listener_makes_the_shadow_fail_loudly(ext4):
    _populate(ext4.mount)
    manifest = create_shadow_set([str(ext4.mount)], FANOTIFY)
    [shadow] = manifest.shadows
    try:
        os.kill(shadow.provider_data["listener_pid"], signal.SIGKILL)
        while listener_alive(shadow):
            time.sleep(0.01)
        with pytest.raises(OSError) as failed:
            Path(shadow.path, "docs", "deleted.bin").read_bytes()
        assert failed.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
        with pytest.raises(OSError):
            os.listdir(shadow.path)
        _change(ext4.mount)  # the applications are not held up by the dead listener
        with pytest.raises(ShadowInvalidError, match=r"fanotify listener of .* has stopped"):
            validity.ensure_valid(manifest)  # what a backup asks after reading
        assert "has stopped" in ShadowStore().load(manifest.id).shadows[0].invalid
    finally:
        ShadowStore().release(manifest.id)
    assert not os.path.exists(shadow.path)
    assert os.listdir(base_dir()) == []


def test_an_orphan_shadow_is_reaped_with_its_listener(ext4):
    _populate(ext4.mount)
    volume = find_volume(str(ext4.mount))
    shadow = FanotifyProvider().create(volume, "20261125T140312-3f9a1c", 0)  # no set knows it
    assert listener_alive(shadow)
    ShadowStore().reap([str(ext4.mount)])
    assert not listener_alive(shadow)
    assert not os.path.exists(shadow.path)
    (ext4.mount / "docs" / "modified.txt").write_bytes(b"no listener, no copy")


def test_a_backup_through_the_shadow_restores_sqlite_as_of_the_instant(big_ext4, tmp_path):
    from shadowvault.jobs.backup import BackupRequest, run_backup
    from shadowvault.jobs.restore_files import FilesRestoreRequest, run_files_restore
    from shadowvault.jobs.writer_plan import load_manifest
    from tests.archive.helpers import new_repo

    app = big_ext4.mount / "app"
    app.mkdir()
    db = app / "app.db"
    held = _make_db(db, "wal")
    acks: list[tuple[int, float, float]] = []  # n, sent, acknowledged
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            sent = time.time()
            _sqlite_insert(held, n)
            acks.append((n, sent, time.time()))
            time.sleep(0.001)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    repo = new_repo(tmp_path / "repo")
    try:
        while len(acks) < 200:
            time.sleep(0.01)
        started = time.time()
        request = BackupRequest(paths=[str(app)], provider="fanotify", writers=[f"sqlite:{db}"])
        result = run_backup(repo, request)
        assert not result.errors, result.errors
        manifest = load_manifest(repo, result.snapshot)
        assert manifest.frozen_at is not None and manifest.freeze_window is not None
        thawed = manifest.frozen_at + manifest.freeze_window
        while acks[-1][1] <= thawed:  # at least one transaction begun after the shadow was made
            time.sleep(0.01)
        restored = tmp_path / "restored"
        done = run_files_restore(repo, FilesRestoreRequest(snapshot=result.snapshot_id, target=str(restored)))
        assert not done.errors
    finally:
        stop.set()
        thread.join()
        held.close()
        repo.close()
    rows, counter = _check_copy(str(restored / str(db).lstrip("/")), tmp_path / "check")
    assert rows == counter >= max(n for n, _, acked in acks if acked < started)
    # nothing the load began after the thaw (while the backup read the shadow) is in it
    assert rows < min(n for n, sent, _ in acks if sent > thawed)
    assert os.listdir(base_dir()) == []


def test_a_copy_aside_that_fails_makes_the_shadow_invalid_not_wrong(big_ext4, monkeypatch):
    with loop_filesystem("ext4") as small:  # the state directory, where copies go: 64 MiB
        monkeypatch.setenv("SHADOWVAULT_STATE_DIR", str(small.mount))
        with open(big_ext4.mount / "large.bin", "wb") as f:
            for _ in range(100):
                f.write(os.urandom(1 << 20))
        manifest = create_shadow_set([str(big_ext4.mount)], FANOTIFY)
        [shadow] = manifest.shadows
        try:
            with open(big_ext4.mount / "large.bin", "wb") as f:  # O_TRUNC: 100 MiB to save, no room
                f.write(b"the application goes on")
            assert (big_ext4.mount / "large.bin").read_bytes() == b"the application goes on"
            with pytest.raises(OSError) as refused:
                Path(shadow.path, "large.bin").read_bytes()
            assert refused.value.errno == errno.EIO
            with pytest.raises(ShadowInvalidError, match="No space left on device"):
                validity.ensure_valid(manifest)
        finally:
            ShadowStore().release(manifest.id)
        assert not os.path.exists(shadow.path)


def test_a_set_made_by_the_command_line_outlives_it_until_deleted(ext4, cli):
    _populate(ext4.mount)
    before = _tree(ext4.mount)
    made = cli("shadows", "create", "--volume", str(ext4.mount), "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    [shadow] = ShadowStore().load(created["id"]).shadows
    assert shadow.provider == "fanotify"  # auto, on ext4
    assert listener_alive(shadow)  # the command has ended; its listener has not
    _change(ext4.mount)
    assert _tree(shadow.path) == before
    deleted = cli("shadows", "delete", created["id"])
    assert deleted.returncode == 0, deleted.stderr
    assert not listener_alive(shadow) and not os.path.exists(shadow.path)
    assert os.listdir(base_dir()) == []


def test_a_commit_past_its_limit_is_cancelled_and_leaves_the_volume_thawed(big_ext4):
    from shadowvault.errors import ShadowError
    from tests.shadow.frozen_probe import write_completes

    for d in range(40):  # enough files that the listener is still indexing (its own freeze) at the limit
        (big_ext4.mount / f"d{d}").mkdir()
        for f in range(500):
            (big_ext4.mount / f"d{d}" / f"f{f}").touch()
    with pytest.raises(ShadowError, match="provider fanotify timed out at commit"):
        create_shadow_set([str(big_ext4.mount)], SetOptions(provider="fanotify", commit_timeout=0.3))
    assert write_completes(big_ext4.mount)
    assert ShadowStore().list() == []
    assert os.listdir(base_dir()) == []
    mounted = Path("/proc/self/mountinfo").read_text()
    assert base_dir() not in mounted


def test_two_shadows_of_one_volume_each_keep_their_own_instant(ext4):
    _populate(ext4.mount)
    first_instant = _tree(ext4.mount)
    first = create_shadow_set([str(ext4.mount)], FANOTIFY)
    try:
        _change(ext4.mount)
        second_instant = _tree(ext4.mount)
        second = create_shadow_set([str(ext4.mount)], FANOTIFY)
        try:
            (ext4.mount / "docs" / "otrunc.txt").write_bytes(b"third version")
            with open(ext4.mount / "docs" / "appended.log", "ab") as f:
                f.write(b"more\n")
            assert _tree(first.shadows[0].path) == first_instant
            assert _tree(second.shadows[0].path) == second_instant
        finally:
            ShadowStore().release(second.id)
        assert _tree(first.shadows[0].path) == first_instant
    finally:
        ShadowStore().release(first.id)
    assert os.listdir(base_dir()) == []
