"""The cost of a fanotify shadow on ext4: commit, freeze window, and the applications' write latency.

    .venv/bin/python bench/fanotify_shadow.py [--files 10000] [--large-mib 2048] [--writes 3000]

On its own loop ext4 (sized for the data, created here and always torn down) with a private state
directory: a tree of small files and one large file. Measured:
  - creating a set (provider fanotify + fsfreeze): time to create, freeze window, commit phase;
  - p50/p99 of 4 KiB pwrites at random offsets of the large file (a descriptor opened after the
    shadow, so every first write of a 64 KiB chunk waits for its copy aside): without a shadow, with
    one (first writes), and with one again (chunks already saved: only the event's round trip);
  - p50/p99 of 4 KiB preads by the application while the shadow exists;
  - the space the saved ranges take after 5 % of the data is rewritten, and the view read back
    (sha256 equal to the point in time, MB/s);
  - the freeze window when the large file is held open for writing at the instant (copied whole);
  - delete.
Needs root and Linux >= 6.14. Figures go to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchfs import loop_filesystem

from shadowvault.shadow.coordinator import create_shadow_set
from shadowvault.shadow.manifest import ShadowSetManifest
from shadowvault.shadow.options import SetOptions
from shadowvault.shadow.store import ShadowStore

BLOCK = 4096
MS = 1000.0
OPTIONS = SetOptions(provider="fanotify", writers=["fsfreeze"], auto_writers=False)


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * MS:8.3f} ms   p99 {p99 * MS:8.3f} ms   max {ordered[-1] * MS:8.3f} ms"


def timed_ops(path: Path, offsets: list[int], op: Callable[[int, int], object]) -> list[float]:
    """Latency of `op(fd, offset)` for each offset, on a descriptor opened now."""
    fd = os.open(path, os.O_RDWR)
    try:
        samples = []
        for offset in offsets:
            start = time.perf_counter()
            op(fd, offset)
            samples.append(time.perf_counter() - start)
        return samples
    finally:
        os.close(fd)


def sha256(path: Path) -> tuple[str, float]:
    h = hashlib.sha256()
    start = time.perf_counter()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest(), time.perf_counter() - start


def make_data(mount: Path, files: int, large_mib: int) -> Path:
    per_dir = 100
    for d in range((files + per_dir - 1) // per_dir):
        (mount / f"d{d:03}").mkdir()
        for f in range(min(per_dir, files - d * per_dir)):
            (mount / f"d{d:03}" / f"f{f:02}").write_bytes(os.urandom(1024 + 64 * f))
    large = mount / "large.bin"
    with open(large, "wb") as out:
        for _ in range(large_mib):
            out.write(os.urandom(1 << 20))
        out.flush()
        os.fsync(out.fileno())
    return large


def du(path: str) -> int:
    total = 0
    for entry in os.scandir(path):
        total += entry.stat(follow_symlinks=False).st_blocks * 512
    return total


def report_set(label: str, manifest: ShadowSetManifest, made_in: float) -> None:
    commit = manifest.phases.get("commit", 0.0)
    window = manifest.freeze_window or 0.0
    print(f"{label}: created in {made_in * MS:.0f} ms, freeze window {window * MS:.0f} ms, ", end="")
    print(f"commit {commit * MS:.0f} ms")
    timings = manifest.shadows[0].provider_data.get("commit_timings", {})
    print("    listener: " + ", ".join(f"{k} {v * MS:.0f} ms" for k, v in timings.items()))


def run(files: int, large_mib: int, writes: int) -> None:
    size = max(1 << 30, (large_mib << 20) * 2 + files * 16384)
    state = tempfile.mkdtemp(prefix="sv-bench-fanotify-state-")
    os.environ["SHADOWVAULT_STATE_DIR"] = state
    os.environ.setdefault("SHADOWVAULT_CONFIG_DIR", tempfile.mkdtemp(prefix="sv-bench-fanotify-config-"))
    rng = random.Random(12)
    try:
        with loop_filesystem("ext4", size) as mount:
            print(f"ext4 on loop: {files} files + {large_mib} MiB file, {writes} writes per row")
            large = make_data(mount, files, large_mib)
            blocks = (large_mib << 20) // BLOCK
            offsets = [rng.randrange(blocks) * BLOCK for _ in range(writes)]
            payload = os.urandom(BLOCK)

            def write(fd: int, offset: int) -> int:
                return os.pwrite(fd, payload, offset)

            def read(fd: int, offset: int) -> bytes:
                return os.pread(fd, BLOCK, offset)

            print(f"4 KiB pwrite, no shadow:                {percentiles(timed_ops(large, offsets, write))}")
            print(f"4 KiB pread,  no shadow:                {percentiles(timed_ops(large, offsets, read))}")

            started = time.monotonic()
            manifest = create_shadow_set([str(mount)], OPTIONS)
            report_set("set (fsfreeze + fanotify)", manifest, time.monotonic() - started)
            try:
                fresh = [rng.randrange(blocks) * BLOCK for _ in range(writes)]
                print(
                    f"4 KiB pwrite, shadow, first writes:     {percentiles(timed_ops(large, fresh, write))}"
                )
                print(
                    f"4 KiB pwrite, shadow, pages saved:      {percentiles(timed_ops(large, fresh, write))}"
                )
                print(
                    f"4 KiB pread,  shadow:                   {percentiles(timed_ops(large, offsets, read))}"
                )
            finally:
                ShadowStore().release(manifest.id)

            expected, _ = sha256(large)
            manifest = create_shadow_set([str(mount)], OPTIONS)
            [shadow] = manifest.shadows
            try:
                rewrite = (large_mib << 20) // 20  # 5 % of the large file, in 64 KiB pieces
                spots = rng.sample(range((large_mib << 20) // (64 << 10)), rewrite // (64 << 10))
                fd = os.open(large, os.O_RDWR)
                for spot in spots:
                    os.pwrite(fd, os.urandom(64 << 10), spot * (64 << 10))
                os.close(fd)
                for d in range(max(1, files // 100 // 20)):  # 5 % of the small files, rewritten with O_TRUNC
                    for p in (mount / f"d{d:03}").iterdir():
                        p.write_bytes(b"rewritten")
                store = shadow.provider_data["store"]
                print(f"saved aside after 5 % rewritten:        {du(store) / (1 << 20):.1f} MiB")
                got, took = sha256(Path(shadow.path) / "large.bin")
                assert got == expected, "the view of the large file is not the point in time"
                print(f"view read back (sha256 equal):          {large_mib / took:.0f} MiB/s")
            finally:
                started = time.monotonic()
                ShadowStore().release(manifest.id)
                print(f"delete:                                 {(time.monotonic() - started) * MS:.0f} ms")

            holder = os.open(large, os.O_RDWR)  # held open for writing at the instant: copied whole
            try:
                started = time.monotonic()
                manifest = create_shadow_set([str(mount)], OPTIONS)
                report_set(
                    f"set with the {large_mib} MiB file open for writing",
                    manifest,
                    time.monotonic() - started,
                )
                ShadowStore().release(manifest.id)
            finally:
                os.close(holder)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--large-mib", type=int, default=2048)
    parser.add_argument("--writes", type=int, default=3000)
    args = parser.parse_args()
    run(args.files, args.large_mib, args.writes)


if __name__ == "__main__":
    main()
