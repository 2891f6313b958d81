"""Micro-benchmarks of the repository engine: save_blob throughput and index memory per blob.

    .venv/bin/python bench/repo_micro.py [--mib 512] [--blobs 1000000]

Run by hand; prints one line per measurement. Not a test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from shadowvault.repo.format import BlobType, IndexPack, PackBlob
from shadowvault.repo.repository import Repository


def save_throughput(mib: int, threads: int, compressible: bool) -> float:
    chunk = 1 << 20
    base = os.urandom(chunk)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        repo = Repository.init(os.path.join(tmp, "repo"), "bench")

        # distinct chunks without paying for os.urandom in the timed loop
        def make(i: int) -> bytes:
            head = i.to_bytes(8, "little")
            return head + (bytes(chunk - 8) if compressible else base[8:])

        data = [make(i) for i in range(mib)]
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda d: repo.save_blob(BlobType.DATA, d), data))
        repo.flush()
        elapsed = time.perf_counter() - started
        repo.close()
    return mib / elapsed


def small_blobs_per_second(count: int, threads: int) -> float:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        repo = Repository.init(os.path.join(tmp, "repo"), "bench")
        base = os.urandom(2048)
        data = [i.to_bytes(8, "little") + base[: 200 + i % 1800] for i in range(count)]
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda d: repo.save_blob(BlobType.DATA, d), data, chunksize=256))
        repo.flush()
        elapsed = time.perf_counter() - started
        repo.close()
    return count / elapsed


def load_throughput(mib: int) -> float:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        repo = Repository.init(os.path.join(tmp, "repo"), "bench")
        base = os.urandom(1 << 20)
        ids = [repo.save_blob(BlobType.DATA, i.to_bytes(8, "little") + base[8:]) for i in range(mib)]
        repo.close()
        repo = Repository.open(os.path.join(tmp, "repo"), "bench")
        started = time.perf_counter()
        for blob_id in ids:
            repo.load_blob(blob_id)
        elapsed = time.perf_counter() - started
        repo.close()
    return mib / elapsed


def index_memory(count: int) -> str:
    """Open a repository whose index lists `count` blobs (fake packs), in a fresh process: RSS
    growth per blob (peak and after), open time, and has_blob lookups per second."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        path = os.path.join(tmp, "repo")
        repo = Repository.init(path, "bench")
        per_file = 10_000
        for start in range(0, count, per_file):
            n = min(per_file, count - start)
            packs = [
                IndexPack(
                    id=os.urandom(32).hex(),
                    size=16 << 20,
                    blobs=[
                        PackBlob(0, os.urandom(32), k << 20, 1 << 20, 1 << 20, False)
                        for k in range(min(16, n - p))
                    ],
                )
                for p in range(0, n, 16)
            ]
            repo.save_index_file(packs)
        repo.close()
        child = f"""
import os, time
from shadowvault.repo.repository import Repository
def rss(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
before = rss()
started = time.perf_counter()
repo = Repository.open({path!r}, 'bench')
opened = time.perf_counter() - started
after = rss()
peak = next(int(line.split()[1]) * 1024 for line in open('/proc/self/status') if line.startswith('VmHWM'))
probes = [os.urandom(32) for _ in range(100_000)]
started = time.perf_counter()
for p in probes:
    repo.has_blob(p)
rate = len(probes) / (time.perf_counter() - started)
n = len(repo.index)
print(f"index of {{n}} blobs: {{(after - before) / n:.0f}} B/blob after open,"
      f" peak {{(peak - before) / n:.0f}} B/blob, open {{opened:.2f}} s, has_blob {{rate:,.0f}}/s")
"""
        return subprocess.run(
            [sys.executable, "-c", child], capture_output=True, text=True, check=True
        ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--blobs", type=int, default=1_000_000)
    args = parser.parse_args()
    for compressible in (False, True):
        kind = "compressible" if compressible else "random"
        for threads in (1, 2, 4):
            rate = save_throughput(args.mib, threads, compressible)
            print(f"save_blob {kind:12} {threads} thread(s): {rate:7.0f} MiB/s")
    for threads in (1, 2):
        rate = small_blobs_per_second(100_000, threads)
        print(f"save_blob small (~1 KiB) {threads} thread(s): {rate:7.0f} blobs/s")
    print(f"load_blob random: {load_throughput(min(args.mib, 256)):7.0f} MiB/s")
    print(index_memory(args.blobs))


if __name__ == "__main__":
    main()
