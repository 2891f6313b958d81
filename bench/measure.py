"""Run one command and measure it: wall time, CPU time and peak RSS of exactly that process.

The peak RSS comes from GNU time (`/usr/bin/time -f %M`, Debian package `time`), not from our own
wait4: Linux carries a process's RSS high-water mark across exec, so a child forked from this (large)
Python process would report at least our RSS. `time` is a small C program, so its child starts
near zero. CPU time comes from `os.wait4` on `time` (which includes the child it reaped); ru_maxrss
of `getrusage(RUSAGE_CHILDREN)` would be useless anyway (the maximum over every child ever waited for).

A tool that runs helper processes (Shadowvault's seal workers) uses the memory of all of them at
once, and GNU time reports only the largest single process: so the memory of the command's session
(every process it started) is also sampled every 50 ms, and the peak reported is the larger of the
two. The session's memory is the sum of each process's proportional set size (PSS, from
/proc/PID/smaps_rollup), not of its resident set: a page that several processes map (a shared
library's code, a shared-memory buffer) is one page of the machine's memory, and summed resident
sets counted it once per process (for a backup with one seal worker, ~18 MiB of libpython, OpenSSL
and window pages twice). For a single process PSS equals RSS but for pages it shares with processes
outside the session; GNU time's high-water mark keeps the figure from falling below the largest
process's resident set either way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = "/usr/bin/time"
SAMPLE_EVERY = 0.05  # seconds between samples of the session's memory


def _pss(proc: str) -> int:
    """A process's proportional set size in bytes (its share of every page it maps)."""
    with open(Path(proc, "smaps_rollup")) as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def session_memory(session: int) -> int:
    """The memory every process in `session` holds, shared pages counted once (bytes)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[3]) != session:  # field 6: session id
                continue
            total += _pss(entry.path)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return total


class _SessionPeak(threading.Thread):
    """Samples a session's memory until stopped; `peak` is the largest sample."""

    def __init__(self, session: int) -> None:
        super().__init__(daemon=True)
        self.session = session
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_EVERY):
            self.peak = max(self.peak, session_memory(self.session))


@dataclass
class Measured:
    argv: list[str]
    returncode: int
    wall: float  # seconds
    cpu: float  # user + system seconds
    sys: float  # system (kernel) seconds, part of cpu
    peak_rss: int  # bytes
    load: float  # 1-minute load average when the command started
    stdout: str
    stderr: str

    def check(self) -> Measured:
        if self.returncode != 0:
            tail = (self.stderr or self.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"{' '.join(self.argv)} exited {self.returncode}: " + " | ".join(tail))
        return self


def drop_caches() -> None:
    """Write back dirty pages and drop the page cache, dentries and inodes (machine-wide, harmless)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def run_measured(
    argv: list[str], *, env: dict[str, str], cwd: str | Path | None = None, timeout: float = 3600
) -> Measured:
    """Run `argv` to completion (killed after `timeout`) and return its measurements."""
    if not os.access(GNU_TIME, os.X_OK):
        raise SystemExit(f"{GNU_TIME} is missing: apt-get install time (listed in tools/bench-packages.txt)")
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile(prefix="sv-bench-time-") as peak,
    ):
        wrapped = [GNU_TIME, "-q", "-f", "%M", "-o", peak.name, *argv]
        load = os.getloadavg()[0]
        started = time.perf_counter()
        proc = subprocess.Popen(
            wrapped,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
            start_new_session=True,  # its own process group: a kill reaches the tool, not only `time`
        )

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        sampler = _SessionPeak(proc.pid)  # a new session: its id is the pid of `time`
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            kill()
            os.waitpid(proc.pid, 0)
            raise
        finally:
            timer.cancel()
            sampler.done.set()
            sampler.join()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        peak_kib = peak.read().decode().strip().splitlines()
        largest = int(peak_kib[-1]) * 1024 if peak_kib and peak_kib[-1].isdigit() else -1
        return Measured(
            argv=argv,
            returncode=proc.returncode,
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            sys=usage.ru_stime,
            peak_rss=max(largest, sampler.peak) if largest >= 0 else -1,
            load=load,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def tree_bytes(path: Path) -> int:
    """Apparent size of every regular file below `path`."""
    total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            total += st.st_size
    return total
