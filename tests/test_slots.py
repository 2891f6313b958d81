"""shadowvault.slots: slots are waited for, given back without waiting, and a Ctrl-C that stops a
wait leaves nothing held (the slots' count lives in a C queue, not behind a Python-level lock that
an interrupt could leave taken: an interrupted backup hung that way on threading.BoundedSemaphore).
The interrupt runs in a child process, so a hang is a timeout here."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

from shadowvault.slots import Slots

CHILD = textwrap.dedent(
    """
    import os, signal, threading
    from shadowvault.slots import Slots

    slots = Slots(0)
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        slots.acquire()
    except KeyboardInterrupt:
        pass
    else:
        raise SystemExit("the wait was not interrupted")
    giver = threading.Thread(target=slots.release)
    giver.start()
    giver.join(timeout=10)
    taker = threading.Thread(target=slots.acquire)
    taker.start()
    taker.join(timeout=10)
    assert not giver.is_alive() and not taker.is_alive(), "a thread waits forever on the slots"
    print("free")
    """
)


def test_a_slot_is_waited_for_until_one_is_given_back() -> None:
    slots = Slots(1)
    slots.acquire()
    taken = threading.Event()
    waiter = threading.Thread(target=lambda: (slots.acquire(), taken.set()))
    waiter.start()
    assert not taken.wait(0.2), "no slot was free"
    slots.release()
    assert taken.wait(10)
    waiter.join()


def test_an_interrupted_wait_holds_nothing() -> None:
    child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "free"
