"""Idle connections are closed, except those that own a set or have a request running.

aiohttp's own keep-alive timer cannot tell a requester holding a set on a quiet connection (it may
read its shadows for hours) from a client that went silent, so it is set out of reach and this
decides instead: a connection with nothing running and no set is closed `timeout` seconds after its
last request ended, or after it was first seen (a client that never finishes its headers).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable

from aiohttp import web

from shadowvault.service.responses import Handler


class IdleConnections:
    """Last activity and running requests per connection, and the sweep that closes idle ones."""

    def __init__(self, timeout: float, owns_sets: Callable[[asyncio.BaseTransport], bool]) -> None:
        self.timeout = timeout
        self._owns_sets = owns_sets
        self._last: dict[asyncio.BaseTransport, float] = {}
        self._running: Counter[asyncio.BaseTransport] = Counter()
        self._task: asyncio.Task[None] | None = None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count the request as running on its connection while it runs."""
        transport = request.transport
        if transport is None:
            return await handler(request)
        self._running[transport] += 1
        try:
            return await handler(request)
        finally:
            self._running[transport] -= 1
            if self._running[transport] <= 0:
                del self._running[transport]
            self._last[transport] = time.monotonic()

    def sweep(self, transports: Iterable[asyncio.BaseTransport]) -> list[asyncio.BaseTransport]:
        """Close the idle ones among the open `transports`; forget the closed. Returns those closed."""
        now = time.monotonic()
        open_now = set(transports)
        for gone in [t for t in self._last if t not in open_now]:
            del self._last[gone]
        closed = []
        for transport in open_now:
            since = self._last.setdefault(transport, now)
            if self._running.get(transport) or self._owns_sets(transport) or transport.is_closing():
                continue
            if now - since >= self.timeout:
                transport.close()
                closed.append(transport)
        return closed

    def start(self, connections: Callable[[], Iterable[asyncio.BaseTransport]]) -> None:
        """Sweep `connections()` a few times per timeout until stopped."""
        interval = min(max(self.timeout / 4, 0.05), 5.0)

        async def watch() -> None:
            while True:
                await asyncio.sleep(interval)
                self.sweep(connections())

        self._task = asyncio.get_running_loop().create_task(watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
