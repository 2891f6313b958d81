"""Worker processes shared by many threads: each worker serves `lends` threads at a time.

The seal workers of a backup and the restore workers of a restore are both such a pool: started
whole or not at all, borrowed by a thread for one request, and stopped together. A worker lent to
two threads at once (a restore's, a backup's seal workers) holds the second request queued while it
serves the first (`Turns`: each thread takes the answer to its own request).
"""

from __future__ import annotations

import queue
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class Worker(Protocol):
    """One worker process, as the pool needs it."""

    alive: bool
    process: subprocess.Popen[Any]

    def stop(self) -> None: ...


W = TypeVar("W", bound=Worker)


def end(worker: Worker) -> None:
    """Kill a worker that failed mid-request (its later answers could not be told apart) and mark
    it gone."""
    worker.alive = False
    if worker.process.poll() is None:
        worker.process.kill()
        worker.process.wait()


class WorkerPool(Generic[W]):
    """`processes` workers made by `start`, each lent to up to `lends` threads; thread-safe."""

    def __init__(self, start: Callable[[], W], processes: int, lends: int = 1) -> None:
        self.workers: list[W] = []
        try:
            for _ in range(processes):
                self.workers.append(start())
        except BaseException:  # none left running when the pool cannot be had whole
            for worker in self.workers:
                worker.stop()
            raise
        self._idle: queue.SimpleQueue[W] = queue.SimpleQueue()
        for _ in range(lends):
            for worker in self.workers:
                self._idle.put(worker)
        self._stopped = threading.Event()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    @property
    def usable(self) -> bool:
        """Not shut down, and some worker still alive."""
        return not self._stopped.is_set() and any(w.alive for w in self.workers)

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self.workers]

    @contextmanager
    def borrowed(self) -> Iterator[W]:
        """The next worker with room for a request, lent to this thread until the block ends."""
        worker = self._idle.get()
        try:
            yield worker
        finally:
            self._idle.put(worker)

    def shutdown(self) -> None:
        """Stop every worker (the threads using them are done, or see their worker gone)."""
        self._stopped.set()
        for worker in self.workers:
            worker.stop()


class Turns:
    """The requests a worker holds at once (lent to several threads): sent one after another and
    answered in the order sent, each thread taking the answer to its own request."""

    def __init__(self) -> None:
        self._sending = threading.Lock()
        self._sent = 0  # requests sent (or whose sending failed): the next request's turn
        self._turns = threading.Condition()
        self._answered = 0  # turns taken: the turn whose answer comes next

    def exchange(self, send: Callable[[], None], answer: Callable[[], T]) -> T:
        """`send` this thread's request, then wait for its turn and take `answer` (each called once,
        whatever the other does: a failed send still takes its turn, so the answers stay in order)."""
        with self._sending:
            turn = self._sent
            self._sent += 1
            send()
        with self._turns:
            while self._answered != turn:
                self._turns.wait()
            try:
                return answer()
            finally:
                self._answered += 1
                self._turns.notify_all()
