"""Run one command and measure it: wall time, CPU time and peak RSS of exactly that process.

`os.wait4` returns the rusage of the one child it reaps (including its own reaped children), unlike
`getrusage(RUSAGE_CHILDREN)`, whose ru_maxrss is the maximum over every child ever waited for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Measured:
    argv: list[str]
    returncode: int
    wall: float  # seconds
    cpu: float  # user + system seconds
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
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        load = os.getloadavg()[0]
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd)
        timer = threading.Timer(timeout, lambda: proc.send_signal(signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            os.waitpid(proc.pid, 0)
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            argv=argv,
            returncode=proc.returncode,
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            peak_rss=usage.ru_maxrss * 1024,
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
