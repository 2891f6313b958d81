"""The running processes, as /proc shows them: how writers and components find the servers they serve.

Below shadow/ and components/ (both read it): the application writers find their instances here, and
the system-state component finds the slapd whose databases it exports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class ProcessInfo:
    """One process as /proc shows it."""

    pid: int
    ppid: int
    comm: str
    argv: list[str]
    cwd: str | None
    uid: int


def processes(comms: set[str]) -> list[ProcessInfo]:
    """Running processes whose command name is in `comms` (kernel threads and vanished ones skipped)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            if comm not in comms:
                continue
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="surrogateescape") for a in f.read().split(b"\0") if a]
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                cwd = None
            uid = os.stat(f"/proc/{pid}").st_uid
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if stat[0] == "Z":
            continue
        found.append(ProcessInfo(pid, int(stat[1]), comm, argv, cwd, uid))
    return found


def option_value(argv: list[str], *names: str) -> str | None:
    """The value of `--name=value` or `--name value` (or `-x value`) in a command line; last one wins."""
    value = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg.startswith(name + "=") and name.startswith("--"):
                value = arg[len(name) + 1 :]
            elif arg == name and i + 1 < len(argv):
                value = argv[i + 1]
    return value
