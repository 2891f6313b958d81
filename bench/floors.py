"""The machine's own floor for a data set, measured in the same run as the tools: what any backup
must at least read, and what any restore must at least write.

  read   `tar -cf - -C DATA . | cat > /dev/null`, page cache dropped: every byte of every file read
         once, in tar's (directory) order, one thread. Not `tar -cf /dev/null`: GNU tar notices an
         archive on /dev/null and skips reading the contents (1.2 GB "read" in 0.28 s).
  copy   `cp -a DATA TARGET` onto the restore filesystem, page cache dropped: read, create, write,
         set owners, modes and times, one file after the other.

A tool's backup is reported as a ratio to the read floor (wall time), its restore as a ratio to
the copy floor; 1.0x would mean the tool costs no more than moving the bytes.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

from measure import Measured

Timed = Callable[[list[str], Path], Measured]


def read_argv(data: Path) -> list[str]:
    return ["sh", "-c", f"tar -cf - -C {shlex.quote(str(data))} . | cat > /dev/null"]


def copy_argv(data: Path, target: Path) -> list[str]:
    return ["cp", "-a", str(data), str(target)]


def measure_read(timed: Timed, data: Path) -> Measured:
    """The cold read floor of the tree at `data`."""
    return timed(read_argv(data), data)


def measure_copy(timed: Timed, data: Path, target: Path) -> Measured:
    """The cold copy floor of `data` into `target` (a path that must not exist yet); the copy is
    removed afterwards."""
    try:
        return timed(copy_argv(data, target), target.parent)
    finally:
        shutil.rmtree(target, ignore_errors=True)


def ratio(wall: float | None, floor: dict | None) -> float | None:
    """`wall` as a multiple of the floor's wall time (None when either is missing)."""
    if wall is None or not floor or not floor.get("wall_s"):
        return None
    return round(wall / floor["wall_s"], 2)
