"""`interrupts.held_back`: a signal that arrives during a short call is raised after it, as it would
have been, so that the caller keeps what the call returned (the id of a run it must cancel).

Each case runs in a fresh Python, where the signal handlers are the command line's own.
"""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import os, signal
from shadowvault import interrupts
interrupts.install_handlers()
finished = False
try:
    with interrupts.held_back():
        os.kill(os.getpid(), signal.{name})
        finished = True  # the held call ran to its end
    print("not raised", finished)
except KeyboardInterrupt as stop:
    print(type(stop).__name__, finished, getattr(stop, "signum", None))
print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, signal.getsignal(signal.SIGHUP).__name__)
"""


def _probe(name: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(name=name)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_sigterm_during_the_call_is_raised_after_it_as_terminated():
    assert _probe("SIGTERM") == ["Terminated True 15", "True _ignore_during_cleanup"]


def test_a_ctrl_c_during_the_call_is_raised_after_it_and_the_handlers_are_back():
    assert _probe("SIGINT") == ["KeyboardInterrupt True None", "True _unwind"]


def test_nothing_is_raised_when_no_signal_arrives():
    assert _probe("SIGCONT") == ["not raised True", "True _unwind"]
