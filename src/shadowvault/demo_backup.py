"""`make run`: back up a busy volume through shadow sets, twice, restore it, and prove the restore.

    python -m shadowvault.demo_backup            # the whole run, in ./var (SHADOWVAULT_DEMO_DIR)
    python -m shadowvault.demo_backup --clean    # unmount and detach what the demo set up

On the embedded default of `shadowvault.demo` (a loop btrfs in ./var with a live SQLite + files
workload): init a local repository in ./var/repo, back up the volume through a shadow set (the
sqlite writer holds the database), change files, back up again (incremental), restore the latest
snapshot into a fresh directory with --verify, check every byte of the files the workload does not
touch against the volume, and the database with PRAGMA integrity_check plus every transaction
acknowledged before the second freeze. Prints a short report.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import secrets
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from shadowvault import demo
from shadowvault.archive.restore import Restorer, RestoreStats
from shadowvault.errors import ShadowvaultError
from shadowvault.jobs.backup import BackupRequest, BackupResult, run_backup
from shadowvault.repo.repository import Repository

REPO_DIR = "repo"
PASSWORD_FILE = "repo-password"
RESTORE_DIR = "restored"
DATA_DIR = "data"
SMALL_FILES = 3000
LARGE_FILE = 24 << 20


@dataclass
class Report:
    first: BackupResult
    second: BackupResult
    restore: RestoreStats
    restore_seconds: float
    repository_bytes: int
    integrity: str
    acknowledged_before_freeze: int
    missing: list[int]
    compared_files: int
    mismatched: list[str]
    total_seconds: float

    @property
    def ok(self) -> bool:
        return (
            self.integrity == "ok"
            and not self.missing
            and not self.mismatched
            and not self.restore.errors
            and not self.first.errors
            and not self.second.errors
            and self.acknowledged_before_freeze > 0
        )


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def make_data(mount: Path) -> Path:
    """Files the workload never touches: many small ones, large ones, and a duplicate (dedup)."""
    data = mount / DATA_DIR
    if data.exists():
        shutil.rmtree(data)
    data.mkdir()
    for d in range(30):
        sub = data / f"dir{d:02d}"
        sub.mkdir()
        for i in range(SMALL_FILES // 30):
            (sub / f"note-{i:03d}.txt").write_bytes(os.urandom(1000 + (i * 97) % 15000))
    large = os.urandom(LARGE_FILE)
    (data / "disk-image-a.bin").write_bytes(large)
    (data / "disk-image-copy.bin").write_bytes(large)  # the same content: stored once
    (data / "logs.txt").write_bytes(
        b"".join(b"%08d log line, mostly repetitive text\n" % i for i in range(200_000))
    )
    return data


def change_data(data: Path) -> None:
    """Between the two backups: one file rewritten, some appended to, one removed, new ones."""
    (data / "dir00" / "note-000.txt").write_bytes(os.urandom(5000))
    with open(data / "logs.txt", "ab") as f:
        f.write(b"appended after the first backup\n" * 1000)
    (data / "dir01" / "note-001.txt").unlink()
    new = data / "new-dir"
    new.mkdir()
    for i in range(50):
        (new / f"new-{i}.txt").write_bytes(os.urandom(3000))


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def compare_data(live: Path, restored: Path) -> tuple[int, list[str]]:
    """Every file under `live` must be byte-identical under `restored`; returns (compared, mismatches)."""
    compared, bad = 0, []
    for path in sorted(live.rglob("*")):
        if not path.is_file():
            continue
        other = restored / path.relative_to(live)
        compared += 1
        if not other.is_file() or not filecmp.cmp(path, other, shallow=False):
            bad.append(str(path.relative_to(live)))
    return compared, bad


def check_database(
    restored_db: Path, workload: demo.Workload, frozen_at: float
) -> tuple[str, int, list[int]]:
    """PRAGMA integrity_check of the restored database; transactions acknowledged before the freeze."""
    before = [n for n, at in workload.acknowledged() if at < frozen_at]
    conn = sqlite3.connect(restored_db)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        present = {row[0] for row in conn.execute("SELECT n FROM tx")}
    finally:
        conn.close()
    return integrity, len(before), [n for n in before if n not in present]


def open_fresh_repository(var: Path) -> Repository:
    """A new repository in var/repo (the previous run's is removed), with a password kept in var/."""
    path = var / REPO_DIR
    if path.exists():
        shutil.rmtree(path)
    password_file = var / PASSWORD_FILE
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(24) + "\n")
        password_file.chmod(0o600)
    return Repository.init(path, password_file.read_text().strip())


def _backup(repo: Repository, volume: demo.DemoVolume) -> BackupResult:
    request = BackupRequest(
        paths=[str(volume.mount)],
        provider="btrfs",
        writers=[f"sqlite:{volume.database}"],
        tags=["make-run"],
    )
    return run_backup(repo, request, on_warning=lambda message: print(f"  note: {message}"))


def _say_backup(label: str, result: BackupResult) -> None:
    s = result.stats
    throughput = s.bytes_read / result.duration if result.duration else 0
    print(
        f"{label}: snapshot {result.snapshot_id[:8]} in {result.duration:.2f}s; freeze window "
        f"{(result.freeze_window or 0) * 1000:.1f} ms; files {s.files_new} new, {s.files_changed} changed, "
        f"{s.files_unmodified} unmodified; read {_mib(s.bytes_read)} of {_mib(s.bytes_total)} "
        f"({_mib(throughput)}/s), added {_mib(result.added_bytes or 0)} to the repository"
    )
    grades = ", ".join(f"{name}={grade}" for name, grade in result.snapshot.consistency.items())
    print(f"  consistency: {grades}")


def run(var: Path | None = None) -> int:
    var = var or demo.demo_dir()
    demo.use_private_dirs(var)
    started = time.monotonic()
    volume = demo.setup_volume(var)
    workload = None
    try:
        print(f"volume: btrfs image {volume.image} on {volume.device}, mounted at {volume.mount}")
        data = make_data(volume.mount)
        workload = demo.start_workload(volume)
        print(f"workload: pid {workload.process.pid} committing SQLite transactions and writing files")
        repo = open_fresh_repository(var)
        print(f"repository: {var / REPO_DIR}")
        first = _backup(repo, volume)
        _say_backup("backup 1 (full)", first)
        change_data(data)
        second = _backup(repo, volume)
        _say_backup("backup 2 (incremental)", second)
        workload.stop()
        manifest_frozen_at = _frozen_at(repo, second)

        target = var / RESTORE_DIR
        if target.exists():
            shutil.rmtree(target)
        t0 = time.monotonic()
        restored_stats = Restorer(repo, str(target), verify=True).restore(
            second.snapshot.tree, str(volume.mount)
        )
        restore_seconds = time.monotonic() - t0
        print(
            f"restore of {second.snapshot_id[:8]} into {target}: {restored_stats.files} files, "
            f"{_mib(restored_stats.bytes_written)} in {restore_seconds:.2f}s "
            f"({_mib(restored_stats.bytes_written / max(restore_seconds, 1e-9))}/s), "
            f"{restored_stats.verified} read back and verified, {len(restored_stats.errors)} errors"
        )
        compared, mismatched = compare_data(data, target / DATA_DIR)
        integrity, acked, missing = check_database(target / demo.DB_NAME, workload, manifest_frozen_at)
        repo_bytes = _tree_size(var / REPO_DIR)
        repo.close()
        report = Report(
            first=first,
            second=second,
            restore=restored_stats,
            restore_seconds=restore_seconds,
            repository_bytes=repo_bytes,
            integrity=integrity,
            acknowledged_before_freeze=acked,
            missing=missing,
            compared_files=compared,
            mismatched=mismatched,
            total_seconds=time.monotonic() - started,
        )
    finally:
        if workload is not None:
            workload.stop()
        demo.teardown_volume(var)
    return print_report(report)


def _frozen_at(repo: Repository, result: BackupResult) -> float:
    """When the second backup's shadow set froze the writers (from the manifest stored with it)."""
    from shadowvault.shadow import manifest as manifest_doc

    assert result.snapshot.manifest is not None
    stored = manifest_doc.decode(repo.load_blob(result.snapshot.manifest))
    assert stored.frozen_at is not None
    return stored.frozen_at


def print_report(report: Report) -> int:
    logical = report.first.stats.bytes_total + report.second.stats.bytes_total
    print()
    print("report")
    print(
        f"  freeze window: {(report.first.freeze_window or 0) * 1000:.1f} ms and "
        f"{(report.second.freeze_window or 0) * 1000:.1f} ms"
    )
    print(
        f"  files: {report.second.stats.files} in the latest snapshot, "
        f"{_mib(report.second.stats.bytes_total)}; incremental read {_mib(report.second.stats.bytes_read)}"
    )
    first = report.first
    print(
        f"  throughput: backup {_mib(first.stats.bytes_read / max(first.duration, 1e-9))}/s, "
        f"restore {_mib(report.restore.bytes_written / max(report.restore_seconds, 1e-9))}/s"
    )
    print(
        f"  dedup: {_mib(logical)} in two snapshots stored in {_mib(report.repository_bytes)} "
        f"(ratio {logical / max(report.repository_bytes, 1):.2f})"
    )
    print(
        f"  verified: {report.compared_files} data files byte-identical"
        + (f", {len(report.mismatched)} differ: {report.mismatched[:5]}" if report.mismatched else "")
    )
    print(
        f"  database: PRAGMA integrity_check = {report.integrity}; "
        f"{report.acknowledged_before_freeze - len(report.missing)} of {report.acknowledged_before_freeze} "
        "transactions acknowledged before the freeze are in the restored database"
    )
    print(f"  time: {report.total_seconds:.1f}s in all")
    if report.ok:
        print("OK: backed up through shadow sets, restored, every byte and the database verified")
        return 0
    print("FAILED: see above", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shadowvault.demo_backup", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--clean", action="store_true", help="unmount and detach the demo volume")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("shadowvault demo: error: needs root (loop devices, mounts, btrfs snapshots)", file=sys.stderr)
        return 1
    try:
        if args.clean:
            demo.teardown_volume()
            return 0
        return run()
    except ShadowvaultError as err:
        print(f"shadowvault demo: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
