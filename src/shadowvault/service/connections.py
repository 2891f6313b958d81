"""Each connection to the daemon, from accept to close: admitted or refused, timed, and answered in
JSON even when what it sends is not HTTP.

aiohttp's RequestHandler is the protocol of every connection; `ApiSite`, the listening socket, makes
this subclass of it instead, which adds what the daemon needs around the application:
- at accept, the peer's uid (SO_PEERCRED) is admitted or refused (admission.py): a refused
  connection gets a 503 and is closed at once, so that a flood holds no descriptors;
- the timers (idle.py) hear of the connection, of the bytes that start a request, and of its end;
- a request aiohttp cannot parse (not HTTP, a line or header too long) never reaches the
  application or its middlewares: aiohttp answers it through `handle_error`, its hook for that,
  which here gives the JSON error every other failure gets, and logs one debug line.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from shadowvault import errors
from shadowvault.service.admission import Admission
from shadowvault.service.idle import IdleConnections
from shadowvault.service.log_limits import Occasional
from shadowvault.service.peer import peer_uid
from shadowvault.service.responses import error_response, raw_error

log = logging.getLogger(__name__)

NEVER = 10.0**9  # aiohttp's own keep-alive timer, out of reach: IdleConnections decides
MAX_HEADERS = 32  # a client of this API sends a handful; each may be 8190 bytes (aiohttp's limit)
BACKLOG = 512  # connections waiting to be accepted: a burst of them does not turn root's away


class ApiConnection(web.RequestHandler):
    """aiohttp's handling of one connection, admitted by uid, timed, and with JSON protocol errors."""

    def __init__(
        self,
        manager: web.Server,
        admission: Admission,
        timers: IdleConnections,
        refused: Occasional,
        **options: Any,
    ) -> None:
        super().__init__(manager, **options)
        self._admission = admission
        self._timers = timers
        self._refused = refused
        self._admitted: tuple[int, asyncio.BaseTransport] | None = None  # uid and transport, until closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        uid = peer_uid(transport)
        uid = -1 if uid is None else uid  # no credentials (never on a Unix socket): not root, at least
        refusal = self._admission.admit(uid)
        if refusal is not None:
            self._refused.log(f"connections refused: {refusal}")
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(raw_error(refusal, 503))
            transport.close()
            return
        self._admitted = (uid, transport)
        self._timers.connected(transport)
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._admitted is None:
            return  # refused: nothing was set up
        uid, transport = self._admitted
        self._admitted = None
        self._admission.release(uid)
        self._timers.gone(transport)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._admitted is None:
            return
        self._timers.received(self._admitted[1])
        super().data_received(data)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request aiohttp could not parse (or to a failure past the middlewares)."""
        if request.writer.output_size > 0:  # as aiohttp's own: an answer was under way, none can follow
            raise ConnectionError("the answer was under way: no error answer can follow it")
        if status >= 500:
            log.error("internal error serving a request: %s", exc or message, exc_info=exc)
            response = error_response(f"internal error: {exc or message}", status)
        else:
            reason = self._reason(exc, message)
            log.debug(
                "bad request on a connection of uid %s: %s", self._admitted and self._admitted[0], reason
            )
            exit_status = errors.UsageError.exit_code
            response = error_response(
                f"bad request: {reason}", status, errors.UsageError.__name__, exit_status
            )
        response.force_close()
        return response

    def _reason(self, exc: BaseException | None, message: str | None) -> str:
        """aiohttp's reason in one line, without the bytes it quotes."""
        if isinstance(exc, LineTooLong):
            return f"the request line or a header is longer than {self.max_field_size} bytes"
        text = message or (exc.message if isinstance(exc, HttpProcessingError) else str(exc or ""))
        first = next((line for line in str(text).splitlines() if line.strip()), "malformed request")
        first = first.strip().rstrip(":")
        return first[:1].lower() + first[1:200]


class ApiSite(web.BaseSite):
    """The daemon's listening socket, whose connections are made by `connection`."""

    def __init__(
        self, runner: web.BaseRunner, sock: socket.socket, connection: Callable[[], ApiConnection]
    ) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self._sock = sock
        self._connection = connection

    @property
    def name(self) -> str:
        return f"http://unix:{self._sock.getsockname()}:"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        # create_server, not create_unix_server: that one (3.13) would unlink a socket systemd handed over
        self._server = await loop.create_server(self._connection, sock=self._sock, backlog=self._backlog)


def connection_factory(
    runner: web.BaseRunner, admission: Admission, timers: IdleConnections
) -> Callable[[], ApiConnection]:
    """What makes each connection's handler, for the application `runner` has set up."""
    server = runner.server
    assert server is not None, "the runner is set up first"
    loop = asyncio.get_running_loop()
    refused = Occasional(log, logging.WARNING)

    def connection() -> ApiConnection:
        return ApiConnection(
            server,
            admission,
            timers,
            refused,
            loop=loop,
            keepalive_timeout=NEVER,
            access_log=None,
            max_headers=MAX_HEADERS,
        )

    return connection
