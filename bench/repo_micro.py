"""Micro-benchmarks of the repository engine: save_blob throughput and index memory per blob.

    .venv/bin/python bench/repo_micro.py [--mib 512] [--blobs 1000000]

Run by hand; prints one line per measurement. Not a test.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

from shadowvault.repo.format import BlobType, PackBlob
from shadowvault.repo.index import BlobIndex
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


def index_bytes_per_blob(count: int) -> float:
    gc.collect()
    tracemalloc.start()
    index = BlobIndex()
    batch = []
    for i in range(count):
        batch.append(PackBlob(0, os.urandom(32), (i % 16) << 20, 1 << 20, 1 << 20, False))
        if len(batch) == 10_000:
            index.add(os.urandom(32).hex(), batch)
            batch = []
    index.add(os.urandom(32).hex(), batch)
    del batch
    gc.collect()
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(index) == count
    return current / count


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
    print(f"index memory: {index_bytes_per_blob(args.blobs):.0f} B per blob ({args.blobs} blobs)")


if __name__ == "__main__":
    main()
