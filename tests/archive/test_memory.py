"""The heap bounds of a backup or restore process (archive/memory.py)."""

from __future__ import annotations

import threading

from shadowvault.archive.memory import bound_heap


def test_one_trimming_thread_however_often_the_heap_is_bounded():
    """Each in-process command bounds the heap again (the tests run many): one thread trims it.
    (What trimming saves is measured in bench/compare.py, not asserted here.)"""
    for _ in range(3):
        bound_heap()
    assert [t.name for t in threading.enumerate()].count("sv-heap-trim") == 1
