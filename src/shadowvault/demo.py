"""`make run`: a shadow set of a busy volume, and the proof that it holds every committed transaction.

    python -m shadowvault.demo            # set up ./var, run the workload, take a shadow set, verify
    python -m shadowvault.demo --clean    # unmount and detach what the demo set up (make clean)

The embedded default: a sparse btrfs image under ./var (SHADOWVAULT_DEMO_DIR overrides), loop
mounted with the device `losetup --find --show` returns (recorded in ./var/loopdev so --clean
detaches exactly it); a workload process commits numbered SQLite transactions and writes files
continuously, acknowledging each committed transaction (number, time) in ./var/acks; a shadow set
with the sqlite writer is taken while it runs. The proof: the shadow's database passes
`PRAGMA integrity_check` and holds every transaction acknowledged before the freeze began. The
volume is unmounted at the end of each run (the image stays for the next).

The steps are functions (setup_volume, start_workload, take_shadow_set, verify_shadow, ...) so
later demos (backup and restore) reuse them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shadowvault import proc
from shadowvault.errors import ShadowvaultError
from shadowvault.loop_devices import detach, holds
from shadowvault.shadow.manifest import ShadowSetManifest

IMAGE_NAME = "demo-btrfs.img"
IMAGE_SIZE = 1 << 30  # sparse: only what is written takes space
LOOPDEV_RECORD = "loopdev"
MOUNT_DIR = "mnt"
ACKS = "acks"
DB_NAME = "app.db"
FILES_DIR = "files"


@dataclass
class DemoVolume:
    """The demo's loop-mounted btrfs filesystem."""

    var: Path
    image: Path
    device: str
    mount: Path

    @property
    def database(self) -> Path:
        return self.mount / DB_NAME


@dataclass
class Workload:
    """The process writing to the volume, and where it acknowledges its commits."""

    process: subprocess.Popen[bytes]
    acks: Path
    database: Path

    def acknowledged(self) -> list[tuple[int, float]]:
        """(transaction number, time.time() after its commit returned), in commit order."""
        if not self.acks.exists():
            return []
        done = []
        for line in self.acks.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                done.append((int(parts[0]), float(parts[1])))
        return done

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Proof:
    """What the shadow was checked for."""

    integrity: str
    acknowledged_before_freeze: int
    missing: list[int] = field(default_factory=list)
    newest_in_shadow: int = 0
    files_in_shadow: int = 0

    @property
    def ok(self) -> bool:
        return self.integrity == "ok" and not self.missing and self.acknowledged_before_freeze > 0


def demo_dir() -> Path:
    """./var, or SHADOWVAULT_DEMO_DIR."""
    return Path(os.environ.get("SHADOWVAULT_DEMO_DIR") or "var").absolute()


def use_private_dirs(var: Path) -> None:
    """Keep the demo's shadow-set state and configuration under var/ unless the caller chose others."""
    os.environ.setdefault("SHADOWVAULT_STATE_DIR", str(var / "state"))
    os.environ.setdefault("SHADOWVAULT_CONFIG_DIR", str(var / "config"))


def _is_mounted(mount: Path) -> bool:
    target = str(mount)
    with open("/proc/self/mountinfo") as f:
        return any(line.split(" ")[4] == target for line in f)


def setup_volume(var: Path | None = None, size: int = IMAGE_SIZE) -> DemoVolume:
    """Create the image if absent, attach it to a fresh loop device, mount it; record the device."""
    var = var or demo_dir()
    var.mkdir(parents=True, exist_ok=True)
    image, mount, record = var / IMAGE_NAME, var / MOUNT_DIR, var / LOOPDEV_RECORD
    if record.exists():
        teardown_volume(var)  # a previous run that did not finish
    fresh = not image.exists()
    if fresh:
        with open(image, "wb") as f:
            f.truncate(size)
    device = proc.output(["losetup", "--find", "--show", str(image)], timeout=30).strip()
    record.write_text(device + "\n")
    try:
        if fresh or proc.run(["blkid", "-p", device], check=False, timeout=30).returncode != 0:
            proc.run(["mkfs.btrfs", "-q", "-f", device], timeout=120)
        mount.mkdir(exist_ok=True)
        proc.run(["mount", device, str(mount)], timeout=60)
    except BaseException:
        teardown_volume(var)
        raise
    return DemoVolume(var=var, image=image, device=device, mount=mount)


def teardown_volume(var: Path | None = None) -> None:
    """Unmount the demo volume and detach exactly the loop device recorded for it."""
    var = var or demo_dir()
    image, mount, record = var / IMAGE_NAME, var / MOUNT_DIR, var / LOOPDEV_RECORD
    if mount.exists() and _is_mounted(mount):
        for attempt in range(50):
            if proc.run(["umount", str(mount)], check=False, timeout=60).returncode == 0:
                break
            if attempt == 49:
                raise ShadowvaultError(f"cannot unmount {mount}: it is busy")
            time.sleep(0.1)
    if record.exists():
        device = record.read_text().strip()
        if device and holds(device, image):
            detach(device, image)
        record.unlink()


def start_workload(volume: DemoVolume) -> Workload:
    """Start the writer process: numbered SQLite transactions and file writes, acknowledged in var/acks."""
    acks = volume.var / ACKS
    acks.unlink(missing_ok=True)
    (volume.mount / FILES_DIR).mkdir(exist_ok=True)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shadowvault.demo",
            "--workload",
            str(volume.database),
            str(acks),
            str(volume.mount / FILES_DIR),
        ],
    )
    workload = Workload(process=process, acks=acks, database=volume.database)
    deadline = time.monotonic() + 30
    while len(workload.acknowledged()) < 200:
        if process.poll() is not None:
            raise ShadowvaultError(f"the demo workload exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise ShadowvaultError("the demo workload made no progress in 30 s")
        time.sleep(0.05)
    return workload


def run_workload(database: str, acks: str, files_dir: str) -> int:
    """The workload process: commit transaction n, then acknowledge it; write a file now and then."""
    stop = False

    def on_term(signum, frame) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    conn = sqlite3.connect(database, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS tx (n INTEGER PRIMARY KEY, at REAL, payload BLOB)")
    conn.execute("DELETE FROM tx")
    n = 0
    with open(acks, "a", buffering=1) as ack:
        while not stop:
            n += 1
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO tx VALUES (?, ?, ?)", (n, time.time(), os.urandom(64)))
            conn.execute("COMMIT")
            ack.write(f"{n} {time.time():.6f}\n")  # acknowledged: the commit has returned
            if n % 10 == 0:
                with open(os.path.join(files_dir, f"file-{n % 500:03d}.txt"), "w") as f:
                    f.write(f"transaction {n}\n" * 8)
            time.sleep(0.001)
    conn.close()
    return 0


def take_shadow_set(volume: DemoVolume) -> contextlib.AbstractContextManager[ShadowSetManifest]:
    """A shadow set of the demo volume with the sqlite writer holding the workload's database."""
    from shadowvault.shadow.coordinator import SetOptions, shadow_set

    options = SetOptions(writers=[f"sqlite:{volume.database}"], provider="btrfs")
    return shadow_set([str(volume.mount)], options)


@contextlib.contextmanager
def database_copy(manifest: ShadowSetManifest, database: Path) -> Iterator[Path]:
    """The shadow's database (with its -wal) copied out: the shadow itself is read-only."""
    from shadowvault.shadow.coordinator import shadow_path

    source = shadow_path(manifest, str(database))
    with tempfile.TemporaryDirectory(prefix="sv-demo-") as tmp:
        for suffix in ("", "-wal"):
            if os.path.exists(source + suffix):
                shutil.copyfile(source + suffix, os.path.join(tmp, DB_NAME + suffix))
        yield Path(tmp) / DB_NAME


def verify_shadow(manifest: ShadowSetManifest, workload: Workload) -> Proof:
    """Integrity of the shadow's database, and every transaction acknowledged before the freeze in it."""
    from shadowvault.shadow.coordinator import shadow_path

    assert manifest.frozen_at is not None
    before = [n for n, at in workload.acknowledged() if at < manifest.frozen_at]
    with database_copy(manifest, workload.database) as copy:
        conn = sqlite3.connect(copy)
        try:
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
            present = {row[0] for row in conn.execute("SELECT n FROM tx")}
        finally:
            conn.close()
    files = os.listdir(shadow_path(manifest, str(workload.database.parent / FILES_DIR)))
    return Proof(
        integrity=integrity,
        acknowledged_before_freeze=len(before),
        missing=[n for n in before if n not in present],
        newest_in_shadow=max(present, default=0),
        files_in_shadow=len(files),
    )


def run_demo(var: Path | None = None) -> int:
    """The whole demo; 0 when the proof holds."""
    var = var or demo_dir()
    use_private_dirs(var)
    say = print
    volume = setup_volume(var)
    workload = None
    try:
        say(f"volume: btrfs image {volume.image} on {volume.device}, mounted at {volume.mount}")
        workload = start_workload(volume)
        say(
            f"workload: pid {workload.process.pid} committing transactions to {volume.database} "
            f"and writing files ({len(workload.acknowledged())} acknowledged so far)"
        )
        with take_shadow_set(volume) as manifest:
            time.sleep(0.3)  # the workload goes on writing after the freeze
            window = (manifest.freeze_window or 0) * 1000
            say(f"shadow set {manifest.id}: shadow at {manifest.shadows[0].path}")
            say(f"freeze window: {window:.1f} ms (writer sqlite held the database, readers went on)")
            for report in manifest.writers:
                for component in report.components:
                    say(
                        f"  writer {report.name}:{report.instance} {report.state}: {component.name} is "
                        f"{component.consistency}-consistent ({component.reason})"
                    )
            proof = verify_shadow(manifest, workload)
        acked_total = len(workload.acknowledged())
    finally:
        if workload is not None:
            workload.stop()
        teardown_volume(var)
    say(f"PRAGMA integrity_check on the shadow's database: {proof.integrity}")
    say(
        f"transactions acknowledged before the freeze: {proof.acknowledged_before_freeze}; in the shadow: "
        f"{proof.acknowledged_before_freeze - len(proof.missing)} (newest #{proof.newest_in_shadow}); "
        f"acknowledged by the end: {acked_total}; files in the shadow: {proof.files_in_shadow}"
    )
    if proof.ok:
        say(
            "OK: the shadow holds exactly a committed state, with every transaction acknowledged before the "
            "freeze"
        )
        return 0
    say(f"FAILED: missing transactions {proof.missing[:10]}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shadowvault.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="unmount and detach the demo volume")
    parser.add_argument("--workload", nargs=3, metavar=("DB", "ACKS", "FILES_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workload:
        return run_workload(*args.workload)
    if os.geteuid() != 0:
        print("shadowvault demo: error: needs root (loop devices, mounts, btrfs snapshots)", file=sys.stderr)
        return 1
    try:
        if args.clean:
            teardown_volume()
            return 0
        return run_demo()
    except ShadowvaultError as err:
        print(f"shadowvault demo: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
