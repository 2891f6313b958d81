"""Waiting for a SQLite lock in Python, so that a cancel of the run or an abort ends the wait at once.

SQLite's own busy handler sleeps inside the library until its busy timeout (the sqlite writer's is
the freeze timeout, 60 s by default), and nothing reaches it there: `Connection.interrupt()` does
not end a busy wait. A cancelled backup, or a set aborted while the writer waited for a lock, would
wait out the whole timeout. So the writer's connection has no busy timeout: a statement that meets
a lock fails at once (SQLITE_BUSY), a checkpoint that meets one says it was blocked, and
`until_free` tries again until the deadline, asking between attempts whether to stop.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

SQLITE_BUSY = 5  # the primary result code; SQLITE_BUSY_* extended codes share its low byte
FIRST_PAUSE = 0.001  # seconds between the first attempts; doubled up to LONGEST_PAUSE
LONGEST_PAUSE = 0.05  # what a cancel may wait for the next look, at most


class StillBusy(Exception):
    """An attempt met a lock another connection holds (past the deadline: the wait gave up)."""


def is_busy(err: sqlite3.Error) -> bool:
    """Whether SQLite refused because another connection holds a lock (SQLITE_BUSY)."""
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == SQLITE_BUSY


def until_free(attempt: Callable[[], T], *, timeout: float, stop: Callable[[], None]) -> T:
    """`attempt()`, again while it meets a lock (SQLITE_BUSY, or StillBusy it raises), for up to
    `timeout` seconds; `stop()` is called before every attempt and raises to end the wait (a
    cancelled run, an aborted writer). Past the timeout, StillBusy with SQLite's reason."""
    deadline = time.monotonic() + timeout
    pause = FIRST_PAUSE
    while True:
        stop()
        try:
            return attempt()
        except sqlite3.OperationalError as err:
            if not is_busy(err):
                raise
            last: Exception = err
        except StillBusy as err:
            last = err
        left = deadline - time.monotonic()
        if left <= 0:
            raise StillBusy(str(last)) from last
        time.sleep(min(pause, left))
        pause = min(pause * 2, LONGEST_PAUSE)
