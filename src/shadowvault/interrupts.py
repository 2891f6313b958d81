"""SIGTERM and SIGHUP unwind the main thread like Ctrl-C, so every cleanup Ctrl-C runs also runs.

By default either signal ends Python on the spot: no `finally`, no abort, so a service manager's
stop (SIGTERM) or a closed terminal (SIGHUP) would leave writers held, half-made shadows on disk and
records in the state directory. With `install_handlers()` the signal raises `Terminated`, a
KeyboardInterrupt, in the main thread instead: the coordinator aborts the set (thaw, delete the
shadows, drop the record) as for Ctrl-C. A second SIGTERM or SIGHUP while that cleanup runs is
ignored, so it cannot cut the cleanup short (SIGKILL still can; `reap` handles what that leaves).

The command line exits with 128 + the signal's number (143 for SIGTERM, 129 for SIGHUP), as a shell
reports a process ended by that signal; Ctrl-C stays 130.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from shadowvault.errors import ShadowvaultError

log = logging.getLogger(__name__)

HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """A SIGTERM or SIGHUP arrived; raised in the main thread so that every cleanup runs on the way up."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"terminated by {self.signal_name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StoppedBySignal(ShadowvaultError):
    """A `Terminated` or a Ctrl-C that has unwound to the command line: reported as one line, exit
    128 + N (130 for Ctrl-C), with the notes the code it went through added (what it left half-done)."""

    def __init__(self, stop: KeyboardInterrupt) -> None:
        said = str(stop) if isinstance(stop, Terminated) else "interrupted"
        super().__init__(": ".join([said, *getattr(stop, "__notes__", [])]))
        self.exit_code = stop.exit_code if isinstance(stop, Terminated) else 130


def install_handlers() -> None:
    """Turn SIGTERM and SIGHUP into `Terminated` (only the main thread can install signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED:
        signal.signal(signum, _unwind)


def _unwind(signum: int, frame: FrameType | None) -> None:
    for other in HANDLED:
        # A Python function, not SIG_IGN: an ignored signal would stay ignored in every command run
        # from here on (a thaw script), while a handler is reset to the default by exec.
        signal.signal(other, _ignore_during_cleanup)
    raise Terminated(signum)


@contextlib.contextmanager
def held_back() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP back for the length of a short call whose result the cleanup
    needs (the id of a run the daemon just started: without it the run could not be cancelled), then
    raise what arrived, as it would have been raised. Outside the main thread there is nothing to hold."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        arrived.append(signum)

    held = (signal.SIGINT, *HANDLED)
    before = {signum: signal.signal(signum, note) for signum in held}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    if arrived:  # the first, raised by the handler that was in place (Ctrl-C's default or _unwind)
        signal.raise_signal(arrived[0])


def _ignore_during_cleanup(signum: int, frame: FrameType | None) -> None:
    log.info("%s ignored: still cleaning up after the first signal", signal.Signals(signum).name)
