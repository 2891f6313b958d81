"""What a restore's entries resolve to, as futures: a batched file's Outcome, and one chained to another.

A restore makes a future per entry, most of them for files of a content batch: those get an
Outcome, the few Future methods a restore uses without a Condition each (one lock for them all,
and their batch's `settled` event for a wait). A hard link's later path, and files a worker makes,
resolve as another future does (`chain`). Directories wait on them (`restore.py`); nothing here
touches the target.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError

# what an entry's restore resolves to: its names below the target, or None when not restored
Restored = tuple[bytes, ...] | None

_OUTCOMES = threading.Lock()  # guards every Outcome's state: held for a few instructions at a time


class Outcome:
    """A batched file's result: the few Future methods a restore uses, without a Condition per file
    (a restore makes one per file). Its batch resolves every one of its files before its run ends
    and then sets `settled`, which is what a wait for an unresolved outcome waits on."""

    __slots__ = ("_callbacks", "_done", "_error", "_result", "_settled")

    def __init__(self, settled: threading.Event) -> None:
        self._settled = settled
        self._done = False
        self._result: Restored = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Outcome], object]] | None = None

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False

    def set_result(self, result: Restored) -> None:
        self._resolve(result, None)

    def set_exception(self, error: BaseException) -> None:
        self._resolve(None, error)

    def _resolve(self, result: Restored, error: BaseException | None) -> None:
        with _OUTCOMES:
            if self._done:
                raise InvalidStateError("an outcome is resolved once")
            self._result, self._error, self._done = result, error, True
            callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            callback(self)

    def add_done_callback(self, callback: Callable[[Outcome], object]) -> None:
        with _OUTCOMES:
            if not self._done:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        callback(self)

    def exception(self) -> BaseException | None:
        if not self._done:
            self._settled.wait()
        return self._error

    def result(self) -> Restored:
        error = self.exception()
        if error is not None:
            raise error
        return self._result


Pending = Future[Restored] | Outcome  # an entry being restored: a pool task, or a file of a batch


def chain(source: Pending, target: Future[Restored]) -> None:
    """Resolve `target` as `source` resolves."""

    def copy(done: Pending) -> None:
        if done.cancelled():
            target.cancel()  # the restore was interrupted
            return
        err = done.exception()
        if err is not None:
            target.set_exception(err)
        else:
            target.set_result(done.result())

    source.add_done_callback(copy)
