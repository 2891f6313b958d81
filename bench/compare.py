"""Shadowvault against restic and borg: same data, same run, side by side, with the machine's floor.

    .venv/bin/python bench/compare.py [--size 2GiB] [--files 100000] [--tools shadowvault,restic,borg]
                                      [--keep-data DIR] [--fstype ext4|xfs] [--no-drop-caches] [--json]
    .venv/bin/python bench/compare.py --scale [--files 1000000] [--size 4GiB] [--probe-files 1000] [...]
    .venv/bin/python bench/compare.py --show RESULT.json      # the table of a saved --json run (any)
    .venv/bin/python bench/compare.py --backend s3 [--size 256MiB] [--files 2000] [--json]

`--backend s3` runs the same phases with both repositories in a local S3 server instead (moto on
127.0.0.1, started here, every request counted by a proxy): Shadowvault's S3 backend against
restic's, same data, same run; borg has no S3 backend and is left out. That mode is bench/s3.py
(it needs no root, and its defaults are smaller: moto is a Python server).

A data set (dataset.py: small and large files, text and noise, duplicates) is generated on a loop
filesystem made here; every tool gets its own repository on a second loop filesystem of the same type
(each loop device doing direct I/O on its image, as a disk does: benchfs.py).
First the floors (floors.py), rows of their own: the cold read of the data set (`tar -cf - | cat`,
not `tar -cf /dev/null`, which GNU tar answers without reading) and its cold copy (`cp -a`) onto
the restore filesystem. Then the phases, each run for every tool in turn: first backup, no-change
incremental, incremental after a deterministic 5 % change (5 % of the files rewritten, 5 % of every
large file's bytes overwritten), full restore of the latest snapshot (checked file by file against
the source: mode, size, BLAKE3 of the content, so a fast but wrong restore cannot win). By default
the page cache is dropped before every timed command (cold reads, like a nightly backup);
--no-drop-caches measures warm.

`--scale` is the million-file set (scale.py; 1,000,000 small files, 4 GiB unless --files/--size
say otherwise; Shadowvault and restic, borg only when --tools names it): first backup, no-change
incremental, `check`, a 5 %-changed incremental, `forget` keeping the last snapshot with a prune,
a restore of one directory (small/d000, 10,000 files), each with time and peak RSS against restic;
floors: the cold read of the set and the cold copy of that directory; then the memory check, a
small tree's backup (--probe-files) into the repository holding the million-file snapshot against
the same into an empty repository. Its data filesystem is made with an inode per file (ext4 fixes
the count at mkfs); generation runs one process per CPU.

Shadowvault runs with `--provider none` (live files, no shadow set): the comparison is about the
repository engine; how each tool is configured is in peers.py. Tools run one after the other in the
order given, each phase for all tools before the next phase.

Reported per command: wall time, throughput (data-set MiB / wall s), CPU time (user + system, from
wait4), peak memory (the larger of GNU time's peak RSS and the summed PSS of every process the command
started: measure.py), repository size, ratios to restic, and each backup's
time as a multiple of the cold read floor, each restore's as a multiple of the cold copy floor;
then the goals of issue 15 (goals.py), each met / not met with its measured ratio. The machine may
be shared: the 1-minute load average at the start of each command is shown; on a busy machine CPU
seconds compare more steadily than wall times.
A --keep-data image is left in DIR (about 2.5 GiB for the default set, about 8 GiB for --scale: a
block per small file); the next run undoes the 5 % change and reuses it. Needs root (losetup,
mount, drop_caches).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import floors
from benchfs import free_bytes, loop_filesystem
from dataset import Dataset, Params, compare, manifest
from goals import default_goals, print_goals, scale_goals
from measure import Measured, drop_caches, run_measured, tree_bytes
from peers import TOOLS, Tool

PHASES = [
    ("first", "first backup"),
    ("unchanged", "no-change incremental"),
    ("changed", "5%-changed incremental"),
    ("restore", "full restore"),
]
SCALE_PHASES = [
    ("first", "first backup"),
    ("unchanged", "no-change incremental"),
    ("check", "check"),
    ("changed", "5%-changed incremental"),
    ("forget", "forget --keep-last 1 --prune"),
    ("restore_dir", "restore of one directory"),
]
FLOOR_OF = {"first": "read", "unchanged": "read", "changed": "read", "restore": "copy", "restore_dir": "copy"}
FLOOR_TITLES = {"read": "floor: cold read (tar | cat)", "copy": "floor: cold copy (cp -a)"}
SCALE_FILES, SCALE_SIZE = 1_000_000, 4 << 30
MIB = 1 << 20
UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 200MiB, 2GiB, 500M)")
    return int(float(match.group(1)) * UNITS[match.group(2)])


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def tool_version(tool: Tool) -> str:
    argv = [tool.exe, "--version"] if tool.name != "restic" else [tool.exe, "version"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=tool.environ())
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def record(m: Measured, data_bytes: int, **extra: object) -> dict:
    return {
        "wall_s": round(m.wall, 3),
        "mib_per_s": round(data_bytes / MIB / m.wall, 1) if m.wall > 0 and data_bytes else None,
        "cpu_s": round(m.cpu, 2),
        "sys_s": round(m.sys, 2),
        "peak_rss_mib": round(m.peak_rss / MIB, 1),
        "load1": round(m.load, 2),
        **extra,
    }


def measure_floors(args: argparse.Namespace, data: Path, copy_target: Path, data_bytes: int) -> dict:
    """The cold read of `data` and its cold copy to `copy_target` (on the restore filesystem)."""

    def timed(argv: list[str], cwd: Path) -> Measured:
        if not args.no_drop_caches:
            drop_caches()
        return run_measured(argv, env=dict(os.environ), cwd=cwd, timeout=args.timeout).check()

    out = {}
    say(f"{FLOOR_TITLES['read']}: {data}")
    m = floors.measure_read(timed, data)
    out["read"] = record(m, data_bytes)
    say(f"  {m.wall:.1f} s")
    say(f"{FLOOR_TITLES['copy']}: {data} -> {copy_target}")
    m = floors.measure_copy(timed, data, copy_target)
    out["copy"] = record(m, data_bytes)
    say(f"  {m.wall:.1f} s")
    return out


def run_phases(args: argparse.Namespace, data_mount: Path, work_mount: Path) -> dict:
    """Generate or reuse the data set, then run every phase for every tool; returns the results."""
    ds = Dataset(data_mount, Params(args.size, args.files, args.seed))
    how = ds.prepare(say)
    total = ds.total_bytes
    say(f"data set {how}: {ds.file_count} files, {total / MIB:.0f} MiB at {ds.data}")
    tools = [TOOLS[name](work_mount / name) for name in args.tools]
    for tool in tools:
        tool.work.mkdir(parents=True, exist_ok=True)
        run_measured(tool.init_argv(), env=tool.environ(), cwd=tool.work).check()
    results: dict = {
        "dataset": {"files": ds.file_count, "bytes": total, "how": how, "fstype": args.fstype},
        "versions": {t.name: tool_version(t) for t in tools},
        "drop_caches": not args.no_drop_caches,
        "mode": "default",
        "phases": {key: {} for key, _ in PHASES},
    }

    def timed(argv: list[str], tool: Tool, cwd: Path) -> Measured:
        if not args.no_drop_caches:
            drop_caches()
        return run_measured(argv, env=tool.environ(), cwd=cwd, timeout=args.timeout).check()

    results["floors"] = measure_floors(args, ds.data, work_mount / "floor-copy", total)

    for key, title in PHASES[:3]:
        if key == "changed":
            change = ds.mutate()
            os.sync()
            results["dataset"]["changed"] = change
            say(f"changed {change['files']} files, {change['bytes'] / MIB:.0f} MiB")
        for tool in tools:
            say(f"{title}: {tool.name}")
            m = timed(tool.backup_argv(ds.data, key), tool, tool.work)
            results["phases"][key][tool.name] = record(
                m, total, repo_mib=round(tree_bytes(tool.repo) / MIB, 1)
            )
            say(f"  {m.wall:.1f} s, peak RSS {m.peak_rss / MIB:.0f} MiB")

    say("hashing the source tree for restore verification")
    expected = manifest(ds.data)
    relative = ds.data.relative_to("/")
    for tool in tools:
        target = work_mount / f"restore-{tool.name}"
        target.mkdir()
        argv, cwd = tool.restore(target, "changed")
        say(f"full restore: {tool.name}")
        m = timed(argv, tool, cwd)
        problems = compare(expected, target / relative)
        if problems:
            say(f"  RESTORE DIFFERS ({len(problems)} problems): " + "; ".join(problems[:5]))
        results["phases"]["restore"][tool.name] = record(
            m, total, verified=not problems, problems=len(problems), first_problems=problems[:5]
        )
        say(f"  {m.wall:.1f} s, peak RSS {m.peak_rss / MIB:.0f} MiB, verified={not problems}")
        shutil.rmtree(target)
    return results


def add_ratios(results: dict) -> None:
    """Every figure also as a ratio to restic's in the same phase, and every backup's and restore's
    wall time as a ratio to its floor (backups to the cold read, restores to the cold copy)."""
    for phase, rows in results["phases"].items():
        base = rows.get("restic")
        floor = results.get("floors", {}).get(FLOOR_OF.get(phase, ""))
        for row in rows.values():
            for field in ("wall_s", "mib_per_s", "cpu_s", "peak_rss_mib", "repo_mib"):
                if base and row.get(field) is not None and base.get(field):
                    row[f"{field}_vs_restic"] = round(row[field] / base[field], 2)
            if floor:
                row["wall_s_vs_floor"] = floors.ratio(row["wall_s"], floor)


def _fmt(value: object, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}{suffix}" if suffix == "x" else f"{value:.1f}{suffix}"
    return f"{value}{suffix}"


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print()
    print(line.format(*header).rstrip())
    print(line.format(*("-" * w for w in widths)).rstrip())
    for row in rows:
        print(line.format(*row).rstrip())


def print_table(results: dict, checks: list[dict]) -> None:
    """The run as printed by `make bench`: the floors, every phase for every tool, the goals."""
    scale = results.get("mode") == "scale"
    d = results["dataset"]
    print(
        f"{'Scale data set' if scale else 'Data set'}: {d['files']} files, {d['bytes'] / MIB:.0f} MiB on "
        f"{d['fstype']} (loop); 5% change: {d.get('changed', {}).get('files', '-')} files / "
        f"{d.get('changed', {}).get('bytes', 0) / MIB:.0f} MiB; "
        f"page cache dropped before each command: {'yes' if results['drop_caches'] else 'no'}"
    )
    if scale:
        where, count = d.get("restore_dir", "-"), d.get("restore_dir_files", "-")
        print(f"One directory restored: {where} ({count} files)")
    print("Versions: " + "; ".join(f"{k}: {v}" for k, v in results["versions"].items()))
    m = results["machine"]
    print(
        f"Machine: {m['cpus']} CPUs, load average at start {m['load_start']}, at end {m['load_end']} "
        f"(other work was running: wall times are noisy; CPU s = user + system of the command, steadier)"
    )
    header = [
        "phase", "tool", "wall s", "MiB/s", "CPU s", "peak mem MiB", "repo MiB", "time/restic",
        "MiB/s/restic", "CPU/restic", "mem/restic", "repo/restic", "time/floor", "load1", "ok",
    ]  # fmt: skip
    rows = []
    for key, r in results.get("floors", {}).items():
        rows.append([
            FLOOR_TITLES.get(key, key), "-", _fmt(r["wall_s"]), _fmt(r["mib_per_s"]), _fmt(r["cpu_s"]),
            _fmt(r["peak_rss_mib"]), "", "", "", "", "", "", "1.00x", _fmt(r["load1"]), "",
        ])  # fmt: skip
    for key, title in SCALE_PHASES if scale else PHASES:
        for tool, r in results["phases"].get(key, {}).items():
            rows.append([
                title, tool, _fmt(r["wall_s"]), _fmt(r["mib_per_s"]), _fmt(r["cpu_s"]),
                _fmt(r["peak_rss_mib"]), _fmt(r.get("repo_mib")),
                _fmt(r.get("wall_s_vs_restic"), "x"), _fmt(r.get("mib_per_s_vs_restic"), "x"),
                _fmt(r.get("cpu_s_vs_restic"), "x"), _fmt(r.get("peak_rss_mib_vs_restic"), "x"),
                _fmt(r.get("repo_mib_vs_restic"), "x"), _fmt(r.get("wall_s_vs_floor"), "x"),
                _fmt(r["load1"]), "" if "verified" not in r else ("verified" if r["verified"] else "WRONG"),
            ])  # fmt: skip
    _table(header, rows)
    if scale:
        print_memory(results)
    print()
    if "floors" in results:
        print(
            "MiB/s of a one-directory restore is of that directory; time/floor: backups against the cold "
            "read, restores against the cold copy"
            if scale
            else "time/floor: backups against the cold read, the restore against the cold copy"
        )
    saved_before_15 = "floors" not in results  # a --show of a run from before issue 15's goals
    print_goals(
        checks,
        "Goals (as saved):"
        if saved_before_15
        else "Goals of issue 15 (Shadowvault vs restic and the floors):",
    )


def print_memory(results: dict) -> None:
    """The scale set's memory check: a small backup into the full repository and into an empty one."""
    probe = results.get("memory", {})
    if not probe:
        return
    first = next(iter(probe.values()))
    print()
    print(
        f"Memory check: a backup of a small tree ({first['files']} files, {first['bytes'] / MIB:.1f} MiB) "
        f"into the repository that holds the {results['dataset']['files']}-file snapshot, against the same "
        "into an empty one"
    )
    header = ["tool", "empty repo: wall s", "RSS MiB", "full repo: wall s", "RSS MiB", "full/empty", "grows?"]
    rows = []
    for tool, r in probe.items():
        flat = r.get("full_vs_empty")
        rows.append([
            tool, _fmt(r["empty"]["wall_s"]), _fmt(r["empty"]["peak_rss_mib"]), _fmt(r["full"]["wall_s"]),
            _fmt(r["full"]["peak_rss_mib"]), _fmt(flat, "x"),
            "-" if flat is None else ("does not grow with the repository" if flat <= 1.2 else "GROWS"),
        ])  # fmt: skip
    _table(header, rows)


def space_needed(size: int, files: int, tools: int) -> tuple[int, int, int]:
    """Image sizes (sparse) for the data and work filesystems, and the disk space the run may use."""
    data_fs = int(size * 1.2) + files * 12 * 1024 + (512 << 20)
    work_fs = int(size * 1.1) * tools + int(size * 1.2) + files * 16 * 1024 * 2 + (1 << 30)
    used = int(size * 1.1) + int(size * 1.0) * tools + int(size * 1.1) + files * 8 * 1024 * 2
    return data_fs, work_fs, used


def scale_space_needed(size: int, files: int, tools: int) -> tuple[int, int, int]:
    """space_needed for --scale: no full restore (one directory), small files take a block each."""
    data_fs = int(size * 1.2) + files * 8 * 1024 + (1 << 30)
    work_fs = int(size * 1.3) * tools + files * 2048 * tools + (2 << 30)
    used = int(size * 1.1) + files * 4096 + tools * (int(size * 1.1) + files * 512) + (1 << 30)
    return data_fs, work_fs, used


def inodes_needed(files: int) -> tuple[int, int]:
    """ext4 inode counts for the data and the work filesystem: every file and directory of the set
    (and the small tree of the memory check), and on the work side a copy and a restore of it."""
    return int(files * 1.1) + 100_000, int(files * 2.2) + 200_000


def s3_bench(args: argparse.Namespace) -> int:
    """`--backend s3`: bench/s3.py with this command's options (borg has no S3 backend)."""
    import s3

    tools = [t.strip() for t in (args.tools or "shadowvault,restic").split(",") if t.strip()]
    if "borg" in tools:
        say("borg has no S3 backend: left out of --backend s3")
        tools.remove("borg")
    size = parse_size("256MiB") if args.size is None else args.size
    return s3.bench(size, 2000 if args.files is None else args.files, args.seed, tools, args.json)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend",
        choices=["local", "s3"],
        default="local",
        help="where the repositories live: a loop filesystem (local) or a local S3 server (s3)",
    )
    parser.add_argument(
        "--size", type=parse_size, default=None, help="data set size (2GiB; 256MiB with --backend s3)"
    )
    parser.add_argument(
        "--files", type=int, default=None, help="number of small files (100000; 2000 with --backend s3)"
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="the million-file set: 1,000,000 files, 4GiB unless --files/--size say otherwise; phases "
        "first backup, no-change incremental, check, forget --prune, one-directory restore, memory check",
    )
    parser.add_argument(
        "--probe-files",
        type=int,
        default=1000,
        help="--scale: files of the small tree of the memory check (1000)",
    )
    parser.add_argument("--seed", type=int, default=1, help="data set seed (1)")
    parser.add_argument(
        "--tools",
        default=None,
        help="comma-separated tools (shadowvault,restic,borg; no borg on s3 or, unless named, with --scale)",
    )
    parser.add_argument(
        "--keep-data", metavar="DIR", type=Path, help="keep the data set's image in DIR, reuse it"
    )
    parser.add_argument("--fstype", choices=["ext4", "xfs"], default="ext4")
    parser.add_argument(
        "--base", default=None, help="directory for the loop images (default: $TMPDIR or /tmp)"
    )
    parser.add_argument(
        "--no-drop-caches", action="store_true", help="do not drop the page cache before commands"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="per command, seconds")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--show", metavar="FILE", type=Path, help="print the table of a saved --json result")
    args = parser.parse_args(argv)
    if args.show:
        try:
            saved = json.loads(args.show.read_text())
        except (OSError, ValueError) as e:
            parser.error(f"--show {args.show}: {e}")
        if "results" in saved:  # a --backend s3 run
            import s3

            s3.print_table(saved)
        else:
            print_table(saved, saved["goals"])
        return 0
    if args.backend == "s3":
        if args.scale:
            parser.error("--scale runs on the local backend only")
        return s3_bench(args)
    if args.scale:
        args.size = SCALE_SIZE if args.size is None else args.size
        args.files = SCALE_FILES if args.files is None else args.files
    args.size = parse_size("2GiB") if args.size is None else args.size
    args.files = 100_000 if args.files is None else args.files
    if args.files < 1 or args.probe_files < 1:
        parser.error("--files and --probe-files must be at least 1")
    default_tools = "shadowvault,restic" if args.scale else "shadowvault,restic,borg"  # borg: --tools
    args.tools = [t.strip() for t in (args.tools or default_tools).split(",") if t.strip()]
    unknown = [t for t in args.tools if t not in TOOLS]
    if unknown or not args.tools:
        parser.error(f"unknown tool(s) {', '.join(unknown)}; choose from {', '.join(TOOLS)}")
    if os.geteuid() != 0:
        parser.error("needs root (loop devices, mount, drop_caches)")

    import tempfile

    base = args.base or tempfile.gettempdir()
    sizes = scale_space_needed if args.scale else space_needed
    data_fs, work_fs, used = sizes(args.size, args.files, len(args.tools))
    data_inodes, work_inodes = inodes_needed(args.files)
    image = None
    if args.keep_data:
        args.keep_data.mkdir(parents=True, exist_ok=True)
        name = "scale-data" if args.scale else "data"
        image = args.keep_data.resolve() / f"{name}-{args.fstype}.img"
        if image.exists() and image.stat().st_size < data_fs:
            say(f"{image} is too small for this data set: making a new one")
            image.unlink()
        if image.exists():
            used -= int(args.size * 1.1)
    free = free_bytes(args.keep_data or base)
    if free < used * 1.2:
        need = used * 1.2 / 2**30
        say(f"not enough free space under {base}: {free / 2**30:.1f} GiB free, ~{need:.1f} GiB needed")
        return 1

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups on a polite kill
    load_start = os.getloadavg()
    started = time.time()
    with contextlib.ExitStack() as stack:
        data_mount = stack.enter_context(
            loop_filesystem(args.fstype, data_fs, image=image, base=base, inodes=data_inodes)
        )
        work_mount = stack.enter_context(loop_filesystem(args.fstype, work_fs, base=base, inodes=work_inodes))
        if args.scale:
            from scale import run_scale

            results = run_scale(args, data_mount, work_mount)
        else:
            results = run_phases(args, data_mount, work_mount)
    results["machine"] = {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "load_start": [round(x, 2) for x in load_start],
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "duration_s": round(time.time() - started, 1),
    }
    add_ratios(results)
    checks = scale_goals(results) if args.scale else default_goals(results)
    results["goals"] = checks
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results, checks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
