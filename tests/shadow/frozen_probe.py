"""Helpers to tell from outside whether a filesystem is frozen: a write in a subprocess blocks."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def start_write(mount: Path, name: str = "probe") -> subprocess.Popen[bytes]:
    """Start a subprocess that writes (and fsyncs) a file on `mount`; it blocks while `mount` is frozen."""
    target = mount / name
    return subprocess.Popen(
        [
            "/usr/bin/python3",
            "-c",
            f"import os; fd = os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT, 0o644); "
            "os.write(fd, b'x'); os.fsync(fd)",
        ],
    )


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def is_blocked(child: subprocess.Popen[bytes], wait: float = 10.0) -> bool:
    """True once `child` sits in uninterruptible sleep (D): a write waiting for a thaw."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if child.poll() is not None:
            return False
        try:
            if process_state(child.pid) == "D":
                return True
        except FileNotFoundError:
            return False
        time.sleep(0.02)
    return False


def write_completes(mount: Path, name: str = "probe-after", wait: float = 20.0) -> bool:
    """A write on `mount` in a subprocess finishes (the filesystem is not frozen)."""
    child = start_write(mount, name)
    try:
        return child.wait(timeout=wait) == 0
    except subprocess.TimeoutExpired:
        return False
    finally:
        if child.poll() is None:
            child.kill()  # only if still blocked; the fixture's thaw_quietly then lets it die
