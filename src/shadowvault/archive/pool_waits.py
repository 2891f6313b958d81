"""Waiting on a restore's thread pool: tasks run at most so many at once, every one waited for, and
an interruption (a task cancelled by the pool's shutdown, or its exception) raised afterwards.

`concurrent.futures.wait` is never woken for a future that the pool's shutdown cancelled (it
waits for "cancelled and notified", which only a worker picking the task up sets): an interrupted
restore waited forever. Here a cancelled future counts as done, looked for every CANCEL_POLL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, CancelledError, Executor, Future, wait
from typing import TypeVar

CANCEL_POLL = 0.1  # seconds between looks for futures cancelled by an interrupted restore

_T = TypeVar("_T")


def each(pool: Executor, task: Callable[[_T], None], items: Iterable[_T], *, limit: int = 0) -> None:
    """Run `task` on every item in the pool (at most `limit` at once, when given) and wait for all
    of them (tasks record their own failures; what comes out here is an interruption)."""
    futures: list[Future[None]] = []
    running: set[Future[None]] = set()
    try:
        for item in items:
            if limit and len(running) >= limit:
                running = wait_any(running)
            fut = pool.submit(task, item)
            futures.append(fut)
            running.add(fut)
    finally:
        wait_all(futures)
    raise_interruption(futures)


def wait_all(futures: Iterable[Future[None]]) -> None:
    """concurrent.futures.wait, but a future cancelled by the pool's shutdown (an interrupted
    restore) counts as done: `wait` is never woken for those, and a batch waited forever."""
    pending = [fut for fut in futures if not fut.done()]
    while pending:
        wait(pending, timeout=CANCEL_POLL)
        pending = [fut for fut in pending if not fut.done()]


def wait_any(futures: set[Future[None]]) -> set[Future[None]]:
    """Wait until one of `futures` is done (or cancelled); those still running."""
    while futures and all(not fut.done() for fut in futures):
        wait(futures, timeout=CANCEL_POLL, return_when=FIRST_COMPLETED)
    return {fut for fut in futures if not fut.done()}


def raise_interruption(futures: list[Future[None]]) -> None:
    for fut in futures:
        if fut.cancelled():
            raise CancelledError()
        err = fut.exception()
        if err is not None:
            raise err
