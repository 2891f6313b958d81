"""Sets that belong to a connection: when the requester's connection closes, its sets are released.

The requester may exit, be killed or crash: the kernel closes its socket either way, aiohttp sees
the connection end, and a watcher (a few times a second) releases the sets that connection owned.
Releasing runs in a worker thread (it deletes snapshots) and never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.2  # seconds between looks at the owning connections


class Ownership:
    """Which connection owns which non-persistent sets, and their release when it closes."""

    def __init__(self, release: Callable[[str], None]) -> None:
        self._release = release  # blocking: called in a worker thread
        self._owned: dict[asyncio.BaseTransport, set[str]] = {}
        self._task: asyncio.Task[None] | None = None

    def own(self, transport: asyncio.BaseTransport | None, set_id: str) -> None:
        """`set_id` lives as long as `transport` (released at once if it is already gone)."""
        if transport is None:
            transport = _ClosedTransport()
        self._owned.setdefault(transport, set()).add(set_id)

    def owns_sets(self, transport: asyncio.BaseTransport) -> bool:
        """Whether the connection holds sets (it is never closed for being idle)."""
        return bool(self._owned.get(transport))

    def disown(self, set_id: str) -> None:
        """The set was deleted by a request: nothing to release for it any more."""
        for ids in self._owned.values():
            ids.discard(set_id)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        """Stop watching and release every set still owned (the daemon is stopping)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        owned, self._owned = self._owned, {}
        await self._release_all([i for ids in owned.values() for i in ids])

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            closed = [t for t in self._owned if t.is_closing()]
            for transport in closed:
                ids = self._owned.pop(transport)
                if ids:
                    log.info(
                        "requester connection closed: releasing shadow set(s) %s", ", ".join(sorted(ids))
                    )
                await self._release_all(sorted(ids))

    async def _release_all(self, ids: list[str]) -> None:
        for set_id in ids:
            try:
                await asyncio.to_thread(self._release, set_id)
            except Exception as err:  # logged, and the store's reap retries once this process ends
                log.warning("could not release shadow set %s: %s", set_id, err)


class _ClosedTransport(asyncio.BaseTransport):
    """Stands for a connection that was gone before its set was made."""

    def is_closing(self) -> bool:
        return True
