"""Whether a shadow set's requester still runs: the test that decides when a set is reaped."""

from __future__ import annotations

import os

from shadowvault import proc

PID_START_SLACK = 2.0  # seconds: /proc's start time is in clock ticks, the set's time is wall clock


def boot_time() -> float:
    """When this machine booted (seconds since the epoch), from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


def process_alive(pid: int | None, since: float | None = None) -> bool:
    """Whether process `pid` runs (not a zombie) and, if `since` is given, started no later than that.

    The start-time check catches a PID reused by a new process after the requester ended.
    """
    if not pid or pid <= 0 or not proc.pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    if fields[0] in ("Z", "X"):
        return False
    if since is not None:
        started = boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        if started > since + PID_START_SLACK:
            return False
    return True
