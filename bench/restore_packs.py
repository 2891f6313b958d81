"""Restore cost in backend reads: a tree of many small files and a few large ones, backed up, restored.

    .venv/bin/python bench/restore_packs.py [--files 10000] [--large 4] [--large-mib 32]

Everything lives on a loop ext4 filesystem (bench/benchfs.py). Prints the restore time and the
number of backend reads of packs, against the number of packs the content occupies: a restore
that reads blob by blob makes one read per blob, one that groups by pack about one per pack.
Run by hand, with warm caches (what is measured is the request count, not the disk). Not a test.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchfs import loop_filesystem
from shadowvault.archive.listing import walk_tree
from shadowvault.archive.restore import Restorer
from shadowvault.archive.walker import Archiver, Source
from shadowvault.repo.pack import pack_name
from shadowvault.repo.repository import Repository

PASSWORD = "bench"


def make_tree(src: Path, files: int, large: int, large_mib: int) -> int:
    """Small files (1-16 KiB) 100 to a directory, and `large` files of `large_mib` MiB; total bytes."""
    total = 0
    src.mkdir(parents=True)
    for i in range(files):
        d = src / f"d{i // 100:04d}"
        if i % 100 == 0:
            d.mkdir()
        data = os.urandom(1024 + (i * 7919) % (15 << 10))
        (d / f"f{i:06d}").write_bytes(data)
        total += len(data)
    for i in range(large):
        with open(src / f"large{i}", "wb") as f:
            for _ in range(large_mib):
                f.write(os.urandom(1 << 20))
        total += large_mib << 20
    return total


def counted_reads(repo: Repository) -> collections.Counter[str]:
    reads: collections.Counter[str] = collections.Counter()
    load: Callable[..., bytes] = repo.backend.load

    def counting(name: str, offset: int = 0, length: int | None = None) -> bytes:
        if name.startswith("data/"):
            reads[name] += 1
        return load(name, offset, length)

    repo.backend.load = counting  # type: ignore[method-assign]
    return reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--large-mib", type=int, default=32)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    size = 3 * (args.files * 20_000 + (args.large * args.large_mib << 20)) + (512 << 20)
    with loop_filesystem("ext4", size) as mount:
        src = mount / "src"
        total = make_tree(src, args.files, args.large, args.large_mib)
        repo_path = mount / "repo"
        with Repository.init(repo_path, PASSWORD, kdf_params={"n": 1 << 10, "r": 8, "p": 1}) as repo:
            raw = os.fsencode(src)
            root = Archiver(repo).archive([Source(raw, raw)])
            repo.flush()
        with Repository.open(repo_path, PASSWORD) as repo:
            content_packs = {
                pack_name(location.pack)
                for _, node in walk_tree(repo, root, b"/")
                for blob_id in node.content
                if (location := repo.lookup(blob_id)) is not None
            }
        print(
            f"data set: {args.files} small files and {args.large} x {args.large_mib} MiB, "
            f"{total / 2**20:.0f} MiB of content in {len(content_packs)} packs"
        )
        for run in range(args.runs):
            # in a process of its own, so its peak RSS is the restore's alone
            child = [sys.executable, __file__, "--restore", str(repo_path), root.hex(), str(mount / "target")]
            child += sorted(content_packs)
            done = subprocess.run(child, capture_output=True, text=True, check=True)
            print(f"run {run + 1}: {done.stdout.strip()}")
            shutil.rmtree(mount / "target")


def restore_once(repo_path: str, root: bytes, target: str, content_packs: set[str]) -> None:
    """One restore; prints its time, CPU time, backend reads and peak RSS."""
    with Repository.open(repo_path, PASSWORD) as repo:
        reads = counted_reads(repo)
        started, cpu = time.perf_counter(), time.process_time()
        stats = Restorer(repo, target).restore(root)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert not stats.errors, stats.errors
    content = sum(n for name, n in reads.items() if name in content_packs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"restore {stats.files} files, {stats.bytes_written / 2**20:.0f} MiB "
        f"in {elapsed:.2f} s ({cpu:.2f} s CPU, peak RSS {peak:.0f} MiB); "
        f"backend reads: {content} of content packs, {sum(reads.values()) - content} of tree packs"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--restore"]:
        restore_once(sys.argv[2], bytes.fromhex(sys.argv[3]), sys.argv[4], set(sys.argv[5:]))
    else:
        main()
