"""What the watchdog does if the coordinator dies while something is held: plain data, sent to it as JSON.

Writers give these for what they hold (a frozen filesystem, an application to resume), and so does
a provider that freezes filesystems itself (providers/lvm_freeze.py); the watchdog (watchdog.py)
decodes them by their `kind`.
"""

from __future__ import annotations

import msgspec


class WatchdogAction(msgspec.Struct, kw_only=True, tag_field="kind"):
    """Something the watchdog must do if the coordinator dies while this writer holds."""


class ThawFilesystem(WatchdogAction, tag="thaw_fs"):
    path: str


class RunCommand(WatchdogAction, tag="run"):
    argv: list[str]
    timeout: float = 30.0
    env: dict[str, str] = {}


class SignalProcess(WatchdogAction, tag="signal"):
    pid: int
    signal: int = 15
