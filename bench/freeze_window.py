"""Freeze window of shadow sets under a write load: median and max over 20 sets per scenario.

    .venv/bin/python bench/freeze_window.py [--sets 20] [--files 10000]

Scenarios (each on its own loop filesystem, created here and always torn down):
  btrfs + sqlite writer       btrfs snapshot (atomic); a process commits SQLite transactions nonstop
  xfs reflink + sqlite, 10k   reflink copy of a 10,000-file tree inside the hold, same write load
  xfs live + fsfreeze         FIFREEZE/FITHAW of the volume, same write load (for comparison)
Goal: median < 50 ms on btrfs. Needs root.

    .venv/bin/python bench/freeze_window.py --costs [--data-mib 128]

What one shadow costs (bench/shadow_cost.py: time to create, freeze window, p50/p99 of the
application's committed 4 KiB writes without and with the shadow, space the copies take after 5 % of
the data is rewritten), for fanotify on loop ext4 here and for lvm (classic and thin, ext4) in the
guest lab of tests/fixtures/guest_lab.py (this host has no device-mapper; the guest runs under TCG,
so its absolute figures are an emulated machine's: compare its rows with each other).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchfs import loop_filesystem


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=300)


def make_tree(root: Path, files: int) -> None:
    for i in range(files):
        directory = root / "tree" / f"d{i // 100:03d}"
        if i % 100 == 0:
            directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{i:05d}").write_bytes(os.urandom(256 + (i * 37) % 4096))


@contextlib.contextmanager
def write_load(mount: Path) -> Iterator[Path]:
    """The demo's workload (numbered SQLite transactions + files) running on `mount`."""
    db, acks, files = mount / "app.db", mount.parent / "acks", mount / "files"
    files.mkdir(exist_ok=True)
    child = subprocess.Popen(
        [sys.executable, "-m", "shadowvault.demo", "--workload", str(db), str(acks), str(files)]
    )
    try:
        deadline = time.monotonic() + 30
        while not (acks.exists() and acks.stat().st_size > 1000):
            if time.monotonic() > deadline or child.poll() is not None:
                raise SystemExit("the write load did not start")
            time.sleep(0.05)
        yield db
    finally:
        child.terminate()
        child.wait(timeout=30)


def measure(mount: Path, writers: list[str], provider: str, sets: int) -> tuple[list[float], list[float]]:
    from shadowvault.shadow.coordinator import SetOptions, shadow_set

    windows, commits, breakdowns = [], [], []
    for _ in range(sets):
        options = SetOptions(writers=writers, provider=provider, auto_writers=False, commit_timeout=60)
        with shadow_set([str(mount)], options) as manifest:
            windows.append(manifest.freeze_window or 0.0)
            commits.append(manifest.phases.get("commit", 0.0))
            breakdowns.append({k: manifest.phases.get(k, 0.0) for k in ("freeze", "commit", "thaw")})
        time.sleep(0.05)
    worst = breakdowns[windows.index(max(windows))]
    print(
        f"  {provider}: slowest set: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in worst.items()),
        file=sys.stderr,
    )
    return windows, commits


COST_SCRIPT = Path(__file__).resolve().parent / "shadow_cost.py"
GUEST_LVS = (("classic", "-L 512M -n classic svbench"), ("thin", "-V 512M --thin -n thin svbench/pool"))


def cost_here(data_mib: int) -> dict[str, object]:
    """fanotify on a fresh loop ext4 here (Linux >= 6.14)."""
    with loop_filesystem("ext4", size=(data_mib << 20) * 4) as mount:
        out = sh(
            sys.executable,
            str(COST_SCRIPT),
            str(mount),
            "--provider",
            "fanotify",
            "--data-mib",
            str(data_mib),
        )
    return json.loads(out.stdout)


def costs_in_guest(data_mib: int) -> list[dict[str, object]]:
    """lvm classic and thin (ext4) in one boot of the guest lab."""
    from tests.fixtures.guest_lab import GUEST_PROJECT, guest_lab

    rows = []
    with guest_lab({"pv": "3G"}) as lab:
        pv = lab.disk("pv")
        lab.check(f"pvcreate -q {pv} && vgcreate -q svbench {pv}")
        lab.check("lvcreate -q --type thin-pool -L 1G -n pool svbench")
        for kind, create in GUEST_LVS:
            mount = f"/mnt/{kind}"
            lab.check(f"lvcreate -q -y -Wy {create} && mkfs.ext4 -q /dev/svbench/{kind} && mkdir -p {mount} "
                      f"&& mount /dev/svbench/{kind} {mount}", timeout=300)  # fmt: skip
            script = f"{GUEST_PROJECT}/bench/shadow_cost.py"
            out = lab.check(f"python3 {script} {mount} --provider lvm --data-mib {data_mib}", timeout=1800)
            rows.append(json.loads(out.stdout))
    return rows


def print_costs(rows: list[dict[str, object]]) -> None:
    print(f"{'provider':18} {'create':>9} {'window':>9} {'write p50/p99 without':>22} "
          f"{'with shadow':>18} {'space after 5 %':>16}")  # fmt: skip
    for row in rows:
        without, during = row["write_p50_p99_ms_without"], row["write_p50_p99_ms_with"]
        print(
            f"{row['provider']:18} {row['create_ms']:>7.0f}ms {row['freeze_window_ms']:>7.0f}ms "
            f"{without[0]:>9.2f} / {without[1]:>7.2f}ms {during[0]:>7.2f} / {during[1]:>7.2f}ms "
            f"{row['space_mib']:>7.1f} MiB of {row['rewritten_mib']:.1f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=20)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument(
        "--costs", action="store_true", help="what one shadow costs: fanotify here, lvm in the guest"
    )
    parser.add_argument("--data-mib", type=int, default=128)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/freeze_window.py needs root (loop devices, mounts)", file=sys.stderr)
        return 1
    state = tempfile.mkdtemp(prefix="sv-bench-state-")
    os.environ["SHADOWVAULT_STATE_DIR"] = state
    os.environ["SHADOWVAULT_CONFIG_DIR"] = tempfile.mkdtemp(prefix="sv-bench-config-")
    if args.costs:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        try:
            print_costs([cost_here(args.data_mib), *costs_in_guest(args.data_mib)])
        finally:
            shutil.rmtree(state, ignore_errors=True)
            shutil.rmtree(os.environ["SHADOWVAULT_CONFIG_DIR"], ignore_errors=True)
        return 0
    results = []
    try:
        with loop_filesystem("btrfs", 2 << 30) as mount, write_load(mount) as db:
            results.append(
                (
                    "btrfs snapshot + sqlite writer, write load",
                    *measure(mount, [f"sqlite:{db}"], "btrfs", args.sets),
                )
            )
        with loop_filesystem("xfs", 2 << 30) as mount:
            make_tree(mount, args.files)
            with write_load(mount) as db:
                results.append(
                    (
                        f"xfs reflink ({args.files} files) + sqlite writer, write load",
                        *measure(mount, [f"sqlite:{db}"], "reflink", args.sets),
                    )
                )
        with loop_filesystem("xfs", 2 << 30) as mount, write_load(mount) as db:
            results.append(
                (
                    "xfs live + fsfreeze + sqlite writer, write load",
                    *measure(mount, [f"sqlite:{db}", "fsfreeze"], "live", args.sets),
                )
            )
    finally:
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(os.environ["SHADOWVAULT_CONFIG_DIR"], ignore_errors=True)

    print(f"{'scenario':58} {'sets':>4} {'median':>10} {'max':>10} {'commit med':>11}")
    for name, windows, commits in results:
        print(
            f"{name:58} {len(windows):>4} {statistics.median(windows) * 1000:>8.1f}ms "
            f"{max(windows) * 1000:>8.1f}ms {statistics.median(commits) * 1000:>9.1f}ms"
        )
    btrfs_median = statistics.median(results[0][1]) * 1000
    print(f"goal: btrfs median < 50 ms: {'met' if btrfs_median < 50 else 'NOT met'} ({btrfs_median:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
