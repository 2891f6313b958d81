"""Bare-metal recovery: the time from an empty disk to a booted system, and where it goes.

    .venv/bin/python bench/recover.py [--target-size 768MiB] [--json]

Builds the recovery tests' source machine (tests/recover/machine.py: Debian minbase with systemd on
an MBR disk, extlinux, ~200 MB used) and backs it up from its mounted partitions (not timed), then
times `recover` onto an empty image of --target-size and the first boot of the result under
QEMU/TCG until the boot probe is done and the login prompt is shown. Prints each phase (partition
and mkfs, restore of files + system-state, fixes, bootloader, first boot) with its share of the
total. Needs root (losetup, mount), QEMU, extlinux. TCG boots are slow and vary with the machine's
load: compare runs on one quiet machine only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "src"))

from tests.recover.machine import boot_until_login, source_machine  # noqa: E402

from compare import parse_size  # noqa: E402
from shadowvault.components.base import CollectOptions  # noqa: E402
from shadowvault.jobs.backup import BackupRequest, run_backup  # noqa: E402
from shadowvault.jobs.backup_components import ComponentSelection, staged_components  # noqa: E402
from shadowvault.recover.run import RecoverRequest, run_recover  # noqa: E402
from shadowvault.repo.repository import Repository  # noqa: E402

PASSWORD = "bench"
FAST_KDF = {"n": 1 << 10, "r": 8, "p": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-size", default="768MiB", help="size of the empty target image")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sv-bench-recover-"))
    try:
        repo_path = work / "repo"
        Repository.init(repo_path, PASSWORD, kdf_params=FAST_KDF).close()
        with Repository.open(repo_path, PASSWORD, write=True) as repo:
            with source_machine(work) as (machine, root):
                started = time.monotonic()
                selection = ComponentSelection(["system-state", "files"], root, CollectOptions(paths=["/"]))
                with staged_components(BackupRequest(paths=[]), selection) as request:
                    snapshot_id = run_backup(repo, request).snapshot_id
                backup_seconds = time.monotonic() - started
            os.unlink(machine.disk)
            target = work / "target.img"
            with open(target, "wb") as f:
                f.truncate(parse_size(args.target_size))
            started = time.monotonic()
            report = run_recover(repo, RecoverRequest(snapshot_id, str(target)))
        booted = time.monotonic()
        boot_until_login(target, work / "serial.log")
        phases = dict(report.timings)
        phases["first boot"] = time.monotonic() - booted
        total = time.monotonic() - started
        figures = {"backup (not in the total)": backup_seconds, **phases, "total": total}
        if args.json:
            print(json.dumps({k: round(v, 2) for k, v in figures.items()}))
            return
        print(f"empty disk ({args.target_size}) to a booted system (login prompt), TCG:")
        for name, seconds in figures.items():
            share = (
                "" if name.startswith("backup") or name == "total" else f"  {100 * seconds / total:5.1f} %"
            )
            print(f"  {name:<28} {seconds:8.1f} s{share}")
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False, timeout=300)


if __name__ == "__main__":
    main()
