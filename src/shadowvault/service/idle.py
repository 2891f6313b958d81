"""Connections that keep the daemon waiting are closed: idle ones, and those slow with their headers.

A connection waits for a request at most `idle_timeout` (from when it came in, or from its last
request's end); once the first byte of a request has come, its request line and headers must be in
within `header_timeout` (a client trickling half a request, slowloris, is answered 408 and closed).
A connection with a request running is the handler's business (its body within the read timeout),
and one that owns a set is never closed: a requester may read its shadows for hours on a quiet
connection. aiohttp's own keep-alive timer cannot tell these apart, so it is set out of reach and
this decides instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable

from aiohttp import web

from shadowvault.service.responses import Handler, RequestTimeout, raw_error

IDLE, HEADERS = "idle", "headers"  # waiting for a request's first byte, or for the rest of its headers


class IdleConnections:
    """What each connection waits for and since when, and the sweep that closes those past their time."""

    def __init__(
        self,
        header_timeout: float,
        idle_timeout: float,
        owns_sets: Callable[[asyncio.BaseTransport], bool],
    ) -> None:
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self._owns_sets = owns_sets
        self._waiting: dict[asyncio.BaseTransport, tuple[str, float]] = {}
        self._running: Counter[asyncio.BaseTransport] = Counter()
        self._task: asyncio.Task[None] | None = None

    def connected(self, transport: asyncio.BaseTransport) -> None:
        self._waiting[transport] = (IDLE, time.monotonic())

    def received(self, transport: asyncio.BaseTransport) -> None:
        """Bytes came: between requests, they start one, whose headers are now on the clock."""
        waiting = self._waiting.get(transport)
        if waiting is not None and waiting[0] == IDLE and not self._running.get(transport):
            self._waiting[transport] = (HEADERS, time.monotonic())

    def gone(self, transport: asyncio.BaseTransport) -> None:
        self._waiting.pop(transport, None)
        self._running.pop(transport, None)

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
                if transport in self._waiting:
                    self._waiting[transport] = (IDLE, time.monotonic())

    def sweep(self) -> list[asyncio.BaseTransport]:
        """Close the connections past their time; those closed."""
        now = time.monotonic()
        closed = []
        for transport, (waiting, since) in list(self._waiting.items()):
            if self._running.get(transport) or self._owns_sets(transport) or transport.is_closing():
                continue
            if waiting == HEADERS and now - since >= self.header_timeout:
                message = f"the request headers did not arrive within {self.header_timeout:g} s"
                if isinstance(transport, asyncio.WriteTransport):
                    transport.write(raw_error(message, 408, RequestTimeout.__name__))
            elif waiting != IDLE or now - since < self.idle_timeout:
                continue
            transport.close()
            closed.append(transport)
        return closed

    def start(self) -> None:
        """Sweep a few times per timeout until stopped."""
        interval = min(max(min(self.header_timeout, self.idle_timeout) / 4, 0.05), 2.0)

        async def watch() -> None:
            while True:
                await asyncio.sleep(interval)
                self.sweep()

        self._task = asyncio.get_running_loop().create_task(watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
