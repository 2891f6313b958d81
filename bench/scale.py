"""The million-file set of issue 15 (`compare.py --scale`): what a large repository costs each tool.

Phases, each for every tool in turn, page cache dropped before every command:
  first backup, no-change incremental, `check` (structure, no data read), a 5 %-changed
  incremental, `forget` keeping the last snapshot with a prune (so the 5 % the first two snapshots
  alone referenced is freed), and a restore of one directory (small/d000, 10,000 files) checked
  against the source. Floors: the cold read of the whole set, and the cold copy of that directory.

Then the memory check: a backup of a small separate tree (1,000 files by default) into the
repository that still holds the million-file snapshot, against the same backup into an empty
repository. Peak RSS that grows with the repository (an index held whole in memory) shows as a
ratio above 1.2x.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import floors
from compare import FLOOR_TITLES, MIB, record, say, tool_version
from dataset import Dataset, Params, compare, manifest
from measure import Measured, drop_caches, run_measured, tree_bytes
from peers import TOOLS, Tool

RESTORE_DIR = "small/d000"
PROBE_SIZE = 4 << 20


def run_scale(args: argparse.Namespace, data_mount: Path, work_mount: Path) -> dict:
    """Generate or reuse the scale data set and run every phase for every tool; returns the results."""
    ds = Dataset(data_mount, Params(args.size, args.files, args.seed))
    how = ds.prepare(say)
    total = ds.total_bytes
    say(f"data set {how}: {ds.file_count} files, {total / MIB:.0f} MiB at {ds.data}")
    tools = [TOOLS[name](work_mount / name) for name in args.tools]

    def timed(argv: list[str], tool: Tool | None, cwd: Path) -> Measured:
        if not args.no_drop_caches:
            drop_caches()
        env = tool.environ() if tool else dict(os.environ)
        return run_measured(argv, env=env, cwd=cwd, timeout=args.timeout).check()

    for tool in tools:
        tool.work.mkdir(parents=True, exist_ok=True)
        run_measured(tool.init_argv(), env=tool.environ(), cwd=tool.work).check()
    directory = ds.data / RESTORE_DIR
    dir_files = sum(len(files) for _, _, files in os.walk(directory))
    dir_bytes = sum(s.size for s in ds.specs if s.rel.startswith(RESTORE_DIR + "/"))
    results: dict = {
        "mode": "scale",
        "dataset": {
            "files": ds.file_count,
            "bytes": total,
            "how": how,
            "fstype": args.fstype,
            "restore_dir": RESTORE_DIR,
            "restore_dir_files": dir_files,
            "restore_dir_bytes": dir_bytes,
        },
        "versions": {t.name: tool_version(t) for t in tools},
        "drop_caches": not args.no_drop_caches,
        "phases": {},
    }
    say(f"{FLOOR_TITLES['read']}: {ds.data}")
    m = floors.measure_read(lambda argv, cwd: timed(argv, None, cwd), ds.data)
    results["floors"] = {"read": record(m, total)}
    say(f"  {m.wall:.1f} s")

    def phase(key: str, title: str, argv_of: Callable[[Tool], list[str]], data_bytes: int = total) -> None:
        rows = results["phases"].setdefault(key, {})
        for tool in tools:
            say(f"{title}: {tool.name}")
            m = timed(argv_of(tool), tool, tool.work)
            rows[tool.name] = record(m, data_bytes, repo_mib=round(tree_bytes(tool.repo) / MIB, 1))
            say(f"  {m.wall:.1f} s, peak RSS {m.peak_rss / MIB:.0f} MiB")

    phase("first", "first backup", lambda t: t.backup_argv(ds.data, "first"))
    phase("unchanged", "no-change incremental", lambda t: t.backup_argv(ds.data, "unchanged"))
    phase("check", "check", lambda t: t.check_argv(), data_bytes=0)  # no MiB/s: it reads no data
    change = ds.mutate()
    os.sync()
    results["dataset"]["changed"] = change
    say(f"changed {change['files']} files, {change['bytes'] / MIB:.0f} MiB")
    phase("changed", "5%-changed incremental", lambda t: t.backup_argv(ds.data, "changed"))
    phase("forget", "forget --keep-last 1 --prune", lambda t: t.forget_prune_argv(), data_bytes=0)

    say(f"hashing {directory} for restore verification")
    expected = manifest(directory)
    copy_target = work_mount / "floor-copy"
    say(f"{FLOOR_TITLES['copy']}: {directory} -> {copy_target}")
    m = floors.measure_copy(lambda argv, cwd: timed(argv, None, cwd), directory, copy_target)
    results["floors"]["copy"] = record(m, dir_bytes)
    say(f"  {m.wall:.1f} s")
    rows = results["phases"].setdefault("restore_dir", {})
    for tool in tools:
        target = work_mount / f"restore-{tool.name}"
        target.mkdir()
        argv, cwd, restored = tool.restore_dir(target, "changed", directory)
        say(f"restore of {RESTORE_DIR}: {tool.name}")
        m = timed(argv, tool, cwd)
        problems = compare(expected, restored)
        if problems:
            say(f"  RESTORE DIFFERS ({len(problems)} problems): " + "; ".join(problems[:5]))
        rows[tool.name] = record(
            m, dir_bytes, verified=not problems, problems=len(problems), first_problems=problems[:5]
        )
        say(f"  {m.wall:.1f} s, peak RSS {m.peak_rss / MIB:.0f} MiB, verified={not problems}")
        shutil.rmtree(target)

    results["memory"] = memory_check(args, tools, data_mount, work_mount, timed)
    return results


Timed = Callable[[list[str], Tool | None, Path], Measured]


def memory_check(
    args: argparse.Namespace, tools: list[Tool], data_mount: Path, work_mount: Path, timed: Timed
) -> dict:
    """Peak RSS of a small tree's backup into an empty repository and into the full one."""
    probe = Dataset(data_mount / "probe", Params(PROBE_SIZE, args.probe_files, args.seed + 100))
    probe.root.mkdir(exist_ok=True)
    probe.prepare(say)
    out = {}
    for tool in tools:
        empty = TOOLS[tool.name](work_mount / f"{tool.name}-empty")
        empty.work.mkdir(parents=True, exist_ok=True)
        run_measured(empty.init_argv(), env=empty.environ(), cwd=empty.work).check()
        row: dict = {"files": probe.file_count, "bytes": probe.total_bytes}
        for where, which in (("empty", empty), ("full", tool)):
            say(f"memory check, small backup into the {where} repository: {tool.name}")
            m = timed(which.backup_argv(probe.data, "probe"), which, which.work)
            row[where] = record(m, probe.total_bytes)
            say(f"  {m.wall:.1f} s, peak RSS {m.peak_rss / MIB:.0f} MiB")
        if row["empty"]["peak_rss_mib"] > 0:
            row["full_vs_empty"] = round(row["full"]["peak_rss_mib"] / row["empty"]["peak_rss_mib"], 2)
        out[tool.name] = row
        shutil.rmtree(empty.work, ignore_errors=True)
    return out
