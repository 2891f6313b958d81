"""A counting semaphore that Ctrl-C cannot wedge.

`threading.BoundedSemaphore` guards its count with a lock taken in Python code, and the
KeyboardInterrupt of a Ctrl-C is raised in the main thread wherever it happens to be: raised just
after that lock was taken, it leaves the lock held for good (bpo-29988), and every thread that
releases a slot afterwards, the cleanup included, waits forever. An interrupted backup hung that
way in a test. Here the slots are tokens in a `queue.SimpleQueue`, whose get and put are single C
calls: an interrupted get takes nothing and holds nothing, and a put never waits.
"""

from __future__ import annotations

import queue


class Slots:
    """`count` slots: `acquire` waits for a free one, `release` gives one back (never waits)."""

    def __init__(self, count: int) -> None:
        self._free: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(count):
            self._free.put(None)

    def acquire(self) -> None:
        self._free.get()

    def release(self) -> None:
        self._free.put(None)

    def __enter__(self) -> Slots:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()
