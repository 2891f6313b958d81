"""What one shadow costs on a mounted volume: to make, to the application's writes, and in space.

    python3 bench/shadow_cost.py MOUNT --provider lvm [--data-mib 128] [--writes 200]

Run by bench/freeze_window.py (`--costs`): here for fanotify on loop ext4, inside the guest lab for
lvm (this host has no device-mapper). On MOUNT: a data file of random bytes, then
  - p50/p99 of a 4 KiB pwrite + fdatasync at random offsets (an application committing), each to a
    64 KiB chunk not written before: without a shadow, then while one exists (first writes: the
    provider copies the old data aside, at once for fanotify, at writeback for lvm);
  - the time to create the set (provider only, no writers) and its freeze window;
  - the space the copies take once 5 % of the data file has been rewritten (64 KiB chunks, fsync):
    lvm: the snapshot's used exception store (classic) or what the thin pool grew by (thin);
    fanotify: the blocks of its saved ranges.
Prints one JSON object on stdout. Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from shadowvault.shadow.coordinator import create_shadow_set
from shadowvault.shadow.manifest import Shadow
from shadowvault.shadow.options import SetOptions
from shadowvault.shadow.store import ShadowStore

CHUNK = 64 << 10
PAGE = 4096


def make_data(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
        f.flush()
        os.fsync(f.fileno())


def committed_writes(path: Path, chunks: list[int]) -> list[float]:
    """Latency of a 4 KiB pwrite + fdatasync into each chunk (index), on a descriptor opened now."""
    fd = os.open(path, os.O_RDWR)
    try:
        samples = []
        for chunk in chunks:
            offset = chunk * CHUNK + random.randrange(CHUNK // PAGE) * PAGE
            start = time.perf_counter()
            os.pwrite(fd, os.urandom(PAGE), offset)
            os.fdatasync(fd)
            samples.append(time.perf_counter() - start)
        return samples
    finally:
        os.close(fd)


def rewrite(path: Path, chunks: list[int]) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        for chunk in chunks:
            os.pwrite(fd, os.urandom(CHUNK), chunk * CHUNK)
        os.fsync(fd)
    finally:
        os.close(fd)


def p50_p99(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def lvs(selection: str) -> dict[str, dict[str, str]]:
    out = subprocess.run(
        ["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o",
         "lv_name,lv_size,data_percent,snap_percent,pool_lv", selection],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return {row["lv_name"]: row for part in json.loads(out)["report"] for row in part["lv"]}


def pool_used(vg: str, pool: str) -> float:
    row = lvs(vg)[pool]
    return float(row["lv_size"]) * float(row["data_percent"] or 0) / 100


def space_of(shadow: Shadow, pool_before: float | None) -> int:
    """Bytes the shadow's copies take now."""
    data = shadow.provider_data
    if shadow.provider == "fanotify":
        return sum(e.stat(follow_symlinks=False).st_blocks * 512 for e in os.scandir(data["store"]))
    if shadow.provider == "lvm":
        vg, lv = data["vg"], data["lv"]
        row = lvs(vg)[lv]
        if data.get("kind") == "classic":
            return int(float(row["lv_size"]) * float(row["snap_percent"] or 0) / 100)
        assert pool_before is not None
        return int(pool_used(vg, row["pool_lv"]) - pool_before)
    raise SystemExit(f"no space measure for provider {shadow.provider}")


def measure(mount: Path, provider: str, data_mib: int, writes: int) -> dict[str, object]:
    data = mount / "cost-data"
    make_data(data, data_mib)
    chunks = list(range(data_mib * (1 << 20) // CHUNK))
    random.shuffle(chunks)
    baseline, with_shadow = chunks[:writes], chunks[writes : 2 * writes]
    rewritten = chunks[2 * writes : 2 * writes + len(chunks) // 20]
    without = committed_writes(data, baseline)

    thin_pool = None
    if provider == "lvm":
        origin = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", str(mount)], capture_output=True, text=True, check=True
        ).stdout.strip()
        rows = lvs(origin)
        (row,) = rows.values()
        thin_pool = row["pool_lv"] or None
    pool_before = None

    options = SetOptions(provider=provider, auto_writers=False, commit_timeout=120)
    started = time.monotonic()
    manifest = create_shadow_set([str(mount)], options)
    made_in = time.monotonic() - started
    try:
        (shadow,) = manifest.shadows
        if thin_pool:
            pool_before = pool_used(shadow.provider_data["vg"], thin_pool)
        during = committed_writes(data, with_shadow)
        rewrite(data, rewritten)
        space = space_of(shadow, pool_before)
    finally:
        ShadowStore().release(manifest.id)
        data.unlink()
    kind = shadow.provider_data.get("kind", "")
    return {
        "provider": provider + (f" {kind}" if kind else ""),
        "create_ms": made_in * 1000,
        "freeze_window_ms": (manifest.freeze_window or 0.0) * 1000,
        "write_p50_p99_ms_without": p50_p99(without),
        "write_p50_p99_ms_with": p50_p99(during),
        "rewritten_mib": len(rewritten) * CHUNK / (1 << 20),
        "space_mib": space / (1 << 20),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mount", type=Path)
    parser.add_argument("--provider", required=True)
    parser.add_argument("--data-mib", type=int, default=128)
    parser.add_argument("--writes", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(measure(args.mount, args.provider, args.data_mib, args.writes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
