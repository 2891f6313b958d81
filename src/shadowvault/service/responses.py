"""JSON responses, and every failure as `{"error": "<one line>", "kind": "<error class>"}`.

A client never sees a traceback: expected failures (ShadowvaultError) keep their message and get a
status that says whose fault it is; anything else is logged here and answered with one line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import msgspec
from aiohttp import web

from shadowvault import errors
from shadowvault.service.runs import StoppingError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestTimeout(errors.ShadowvaultError):
    """The client did not send its request body in time."""


class BodyTooLarge(errors.ShadowvaultError):
    """The request body is larger than the daemon accepts."""


STATUS: dict[type[errors.ShadowvaultError], int] = {
    RequestTimeout: 408,
    BodyTooLarge: 413,
    StoppingError: 503,
    errors.UsageError: 400,
    errors.PermissionDeniedError: 403,
    errors.NotFoundError: 404,
    errors.UnsupportedError: 422,
    errors.ShadowError: 409,  # the set could not be made now (a writer or provider failed)
}


def status_for(err: errors.ShadowvaultError) -> int:
    """The HTTP status of an expected failure: its closest class in STATUS, else 500."""
    for cls in type(err).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def json_response(data: Any, status: int = 200) -> web.Response:
    """`data` (msgspec structs, lists, dicts) as a JSON body."""
    body = msgspec.json.encode(msgspec.to_builtins(data, enc_hook=str))
    return web.Response(body=body, status=status, content_type="application/json")


def _error(message: str, kind: str, exit_status: int) -> dict[str, Any]:
    return {"error": " ".join(message.split()) or "error", "kind": kind, "exit_status": exit_status}


def error_response(
    message: str, status: int, kind: str = "ShadowvaultError", exit_status: int = 1
) -> web.Response:
    """One JSON line naming the error; `kind` and `exit_status` let a client raise the same error
    and end with the same exit status as the command would in process."""
    return json_response(_error(message, kind, exit_status), status=status)


def raw_error(message: str, status: int, kind: str = "ShadowvaultError", exit_status: int = 1) -> bytes:
    """The same error as a whole HTTP answer in bytes, for a connection with no request to answer
    (refused when it comes in, or too slow with its headers): written, then the connection closed."""
    body = msgspec.json.encode(_error(message, kind, exit_status))
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure of a handler (and aiohttp's own 404, 405, 413) into a JSON error; a client
    that hung up (mid-body, or while following events) is no failure of ours: one debug line."""
    try:
        return await handler(request)
    except errors.ShadowvaultError as err:
        return error_response(str(err), status_for(err), type(err).__name__, err.exit_code)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        if err.status in (404, 405):
            message = f"no such call: {request.method} {request.path}"
            return error_response(message, err.status, "NotFoundError", errors.NotFoundError.exit_code)
        return error_response(
            err.reason if err.text is None else err.text.removeprefix(f"{err.status}: "),
            err.status,
            "UsageError" if err.status < 500 else "ShadowvaultError",
            errors.UsageError.exit_code if err.status < 500 else 1,
        )
    except ConnectionError as err:
        if request.transport is not None:  # the client is there: a failure of the work itself
            return _internal_error(request, err)
        # The client hung up (closed mid-body, or while following events): nobody to answer.
        log.debug("%s %s: the client closed the connection (%s)", request.method, request.path, err)
        return error_response("the client closed the connection", 499)
    except Exception as err:
        return _internal_error(request, err)


def _internal_error(request: web.Request, err: Exception) -> web.Response:
    log.error("internal error serving %s %s", request.method, request.path, exc_info=err)
    return error_response(f"internal error: {type(err).__name__}: {err}", 500)
