"""A sparse file: backup and restore of a large file that is mostly holes, Shadowvault beside restic.

    .venv/bin/python bench/sparse.py [--size 4GiB] [--data 64MiB] [--extents 32] [--fstype ext4|xfs]
                                     [--tools shadowvault,restic] [--no-drop-caches] [--json]

One loop filesystem holds the file (`--extents` random data extents at odd offsets, `--data` in all,
the rest holes), each tool's repository and each restore. Per tool: first backup and full restore,
each with wall time, CPU time and peak RSS (measure.py), then the restored file is checked byte for
byte against the source (where either has data; both read as zeros elsewhere) and its allocated
size is shown: a restore that writes the holes out allocates the whole apparent size. restic 0.14
has no `restore --sparse` (0.15 added it), so it writes every zero. By default the page cache is
dropped before every timed command. Needs root (losetup, mount, drop_caches).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path

from benchfs import loop_filesystem
from compare import parse_size
from measure import Measured, drop_caches, run_measured
from peers import TOOLS

MIB = 1 << 20


def write_sparse_file(path: Path, size: int, data: int, extents: int, seed: int = 15) -> None:
    """`extents` runs of random bytes, `data` bytes in all, at odd offsets spread over `size`."""
    rng = random.Random(seed)
    each = data // extents
    slot = size // extents
    with open(path, "wb") as f:
        for index in range(extents):
            f.seek(index * slot + rng.randrange(1, max(2, slot - each)) | 1)
            f.write(rng.randbytes(each))
        f.truncate(size)


def data_ranges(path: Path) -> list[tuple[int, int]]:
    """Where the file has data (SEEK_DATA/SEEK_HOLE)."""
    ranges, position, size = [], 0, os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:
                break
            position = os.lseek(fd, start, os.SEEK_HOLE)
            ranges.append((start, position))
    finally:
        os.close(fd)
    return ranges


def same_bytes(a: Path, b: Path) -> bool:
    """Byte for byte where either file has data (both read as zeros elsewhere)."""
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for start, end in data_ranges(a) + data_ranges(b):
            for at in range(start, end, 64 * MIB):
                length = min(64 * MIB, end - at)
                fa.seek(at)
                fb.seek(at)
                if fa.read(length) != fb.read(length):
                    return False
    return True


def timed(argv: list[str], env: dict[str, str], cwd: Path, *, cold: bool) -> Measured:
    if cold:
        drop_caches()
    return run_measured(argv, env=env, cwd=cwd).check()


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    image = args.size * 2 + 2 * args.data * len(args.tools) + 512 * MIB  # a full restore per tool fits
    with loop_filesystem(args.fstype, image) as mount:
        source = mount / "data" / "sparse.img"
        source.parent.mkdir()
        write_sparse_file(source, args.size, args.data, args.extents)
        os.sync()
        for name in args.tools:
            (mount / name).mkdir(exist_ok=True)
            tool = TOOLS[name](mount / name)
            run_measured(tool.init_argv(), env=tool.environ(), cwd=tool.work).check()
            env = tool.environ()
            backup = timed(tool.backup_argv(source.parent, "sparse"), env, tool.work, cold=args.cold)
            target = mount / f"restore-{name}"
            target.mkdir()
            argv, cwd = tool.restore(target, "sparse")
            restore = timed(argv, env, cwd, cold=args.cold)
            restored = target / str(source).lstrip("/")
            rows.append(
                {
                    "tool": name,
                    "backup_s": round(backup.wall, 2),
                    "backup_cpu_s": round(backup.cpu, 2),
                    "backup_rss_mib": round(backup.peak_rss / MIB, 1),
                    "restore_s": round(restore.wall, 2),
                    "restore_cpu_s": round(restore.cpu, 2),
                    "restore_rss_mib": round(restore.peak_rss / MIB, 1),
                    "restored_allocated_mib": round(os.stat(restored).st_blocks * 512 / MIB, 1),
                    "identical": same_bytes(source, restored),
                    "load_at_start": round(backup.load, 1),
                }
            )
            shutil.rmtree(target)
    return rows


def table(rows: list[dict[str, object]], args: argparse.Namespace) -> str:
    head = (
        f"sparse file: {args.size / MIB:.0f} MiB apparent, {args.data / MIB:.0f} MiB of data in "
        f"{args.extents} extents, {args.fstype}, {'cold' if args.cold else 'warm'} cache"
    )
    columns = list(rows[0]) if rows else []
    lines = [head, " | ".join(columns), " | ".join("---" for _ in columns)]
    lines += [" | ".join(str(row[c]) for c in columns) for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=4 << 30)
    parser.add_argument("--data", type=parse_size, default=64 * MIB)
    parser.add_argument("--extents", type=int, default=32)
    parser.add_argument("--fstype", choices=("ext4", "xfs"), default="ext4")
    parser.add_argument("--tools", default="shadowvault,restic")
    parser.add_argument("--no-drop-caches", dest="cold", action="store_false")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.tools = [t for t in args.tools.split(",") if t]
    unknown = [t for t in args.tools if t not in TOOLS]
    if unknown:
        raise SystemExit(f"unknown tools: {', '.join(unknown)} (known: {', '.join(TOOLS)})")
    if os.geteuid() != 0:
        raise SystemExit("bench/sparse.py needs root (loop filesystems, drop_caches)")
    rows = run(args)
    print(json.dumps(rows, indent=1) if args.json else table(rows, args))
    if not all(row["identical"] for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
