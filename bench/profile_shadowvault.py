"""Where Shadowvault's time goes: py-spy profiles of backup, no-change backup and restore.

    .venv/bin/pip install py-spy          # a tool for this script, not a project dependency
    .venv/bin/python bench/profile_shadowvault.py [--size 2GiB] [--files 100000] [--keep-data DIR]
                                                  [--out DIR] [--rate 250]

Same data set and loop filesystems as compare.py. Each command runs under `py-spy record --threads
--subprocesses --format raw` (its seal workers and metadata prefetch included; running threads
only: where the CPU goes; with --idle waiting threads too: where the wall time goes); the collapsed
stacks are kept in --out and summarised here per thread group: top functions by own samples and by
samples with the function anywhere on the stack. The page cache is
dropped before each command.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import shutil
import sys
from pathlib import Path

from benchfs import loop_filesystem
from compare import parse_size, say, space_needed
from dataset import Dataset, Params, manifest
from measure import drop_caches, run_measured
from peers import Shadowvault

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _group(thread_frame: str, stack: list[str]) -> str:
    """A thread's role from its name (py-spy prints it after the id) or else from its stack."""
    joined = thread_frame + ";" + ";".join(stack)
    for marker, name in (
        ("sv-read", "reader threads"),
        ("sv-blob", "blob threads"),
        ("sv-restore", "restore threads"),
        ("read_file (", "reader threads"),
        ("_save_chunk", "blob threads"),
        ("_restore_entry", "restore threads"),
        ("<module> (shadowvault", "main thread"),
        ("main (shadowvault", "main thread"),
    ):
        if marker in joined:
            return name
    return "other threads" if "_bootstrap" in joined else "main thread"


def _short(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match.group("file")
    path = path.split("site-packages/")[-1].split("src/")[-1]
    return f"{match.group('func')} ({path})"


def summarise(raw: Path, top: int = 15) -> str:
    """Per thread group: total samples, top self and top inclusive functions (with % of the group)."""
    groups: dict[str, dict[str, collections.Counter]] = {}
    totals: collections.Counter = collections.Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack_text.split(";")
        thread = frames[0] if frames and frames[0].startswith("thread") else ""
        stack = [_short(f) for f in frames if not f.startswith(("thread", "process"))]
        for group in ("all threads", _group(thread, stack)):
            totals[group] += count
            g = groups.setdefault(group, {"self": collections.Counter(), "incl": collections.Counter()})
            if stack:
                g["self"][stack[-1]] += count
            for frame in set(stack):
                g["incl"][frame] += count
    out = []
    for group, total in totals.most_common():
        out.append(f"  {group}: {total} samples")
        for kind in ("self", "incl"):
            out.append(f"    top by {'own samples' if kind == 'self' else 'samples on the stack'}:")
            for func, n in groups[group][kind].most_common(top):
                out.append(f"      {100 * n / total:5.1f}%  {func}")
    return "\n".join(out)


def profile(
    tool: Shadowvault, argv: list[str], out: Path, rate: int, cwd: Path, idle: bool, cold: bool = True
) -> tuple[float, str]:
    if cold:
        drop_caches()
    py_spy = Path(sys.executable).with_name("py-spy")
    wrapped = [str(py_spy), "record", "--threads", "--subprocesses", "--format", "raw", "--rate", str(rate),
               "--nonblocking", "-o", str(out), *(["--idle"] if idle else []), "--", *argv]  # fmt: skip
    m = run_measured(wrapped, env=tool.environ(), cwd=cwd).check()
    return m.wall, summarise(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("2GiB"))
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-data", type=Path)
    parser.add_argument("--out", type=Path, default=Path("/tmp/sv-profiles"))
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--phases", default="first,unchanged,restore")
    parser.add_argument(
        "--idle", action="store_true", help="also sample waiting threads (where wall time goes, not CPU)"
    )
    parser.add_argument("--warm", action="store_true", help="do not drop the page cache (CPU cost only)")
    args = parser.parse_args()
    if not Path(sys.executable).with_name("py-spy").exists():
        parser.error("py-spy is not installed: .venv/bin/pip install py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    phases = args.phases.split(",")
    data_fs, work_fs, _ = space_needed(args.size, args.files, 1)
    image = args.keep_data.resolve() / "data-ext4.img" if args.keep_data else None
    with contextlib.ExitStack() as stack:
        data_mount = stack.enter_context(loop_filesystem("ext4", data_fs, image=image))
        work_mount = stack.enter_context(loop_filesystem("ext4", work_fs))
        ds = Dataset(data_mount, Params(args.size, args.files, args.seed))
        ds.prepare(say)
        if args.warm:
            manifest(ds.data)  # reads every file: the data set is in the page cache
        tool = Shadowvault(work_mount / "shadowvault")
        run_measured(tool.init_argv(), env=tool.environ(), cwd=tool.work).check()
        reports = []
        for label in ("first", "unchanged"):
            argv = tool.backup_argv(ds.data, label)
            if label not in phases:
                run_measured(argv, env=tool.environ(), cwd=tool.work).check()
                continue
            wall, text = profile(
                tool, argv, args.out / f"{label}.txt", args.rate, tool.work, args.idle, not args.warm
            )
            reports.append(f"{label} backup ({wall:.1f} s under py-spy):\n{text}")
        if "restore" in phases:
            target = work_mount / "restore"
            target.mkdir()
            argv, cwd = tool.restore(target, "unchanged")
            wall, text = profile(
                tool, argv, args.out / "restore.txt", args.rate, cwd, args.idle, not args.warm
            )
            reports.append(f"restore ({wall:.1f} s under py-spy):\n{text}")
            shutil.rmtree(target)
    print("\n\n".join(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
