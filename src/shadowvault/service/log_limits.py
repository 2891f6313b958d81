"""Log lines that others can cause over and over (a flood of connections, descriptors run out) are
said once, then at most once a minute with how many times it happened meanwhile: a local user must
not be able to fill the disk with the daemon's log."""

from __future__ import annotations

import logging
import time

INTERVAL = 60.0


class Occasional:
    """One log line, said at most once per `interval` seconds."""

    def __init__(self, logger: logging.Logger, level: int, interval: float = INTERVAL) -> None:
        self._logger = logger
        self._level = level
        self._interval = interval
        self._last: float | None = None
        self._unsaid = 0

    def log(self, message: str) -> None:
        now = time.monotonic()
        if self._last is not None and now - self._last < self._interval:
            self._unsaid += 1
            return
        if self._unsaid and self._last is not None:
            message += f" ({self._unsaid} more time(s) in the last {now - self._last:.0f} s)"
        self._logger.log(self._level, "%s", message)
        self._last, self._unsaid = now, 0
