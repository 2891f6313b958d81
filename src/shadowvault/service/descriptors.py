"""The daemon's file descriptors: as many as it may have, and running out of them said once a minute.

A service starts with a soft RLIMIT_NOFILE of 1024 (systemd's default, and most shells'), which a
few hundred idle connections exhaust: the daemon raises it to the hard limit (`LimitNOFILE=` in its
unit) when it starts; the programs it starts get the limit it started with (child_limits.py).
Should accept() still fail for want of descriptors, asyncio reports it on every try, many times a
second; here that is one line a minute, and new connections wait in the socket's backlog until
some close.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from shadowvault import child_limits
from shadowvault.service.log_limits import Occasional

log = logging.getLogger(__name__)

ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's message for EMFILE, ENFILE, ENOBUFS
UNLIMITED = 1 << 20  # what an RLIM_INFINITY soft limit counts as


def raise_limit() -> int:
    """Raise the soft descriptor limit to the hard one (not its children's); the soft limit now."""
    soft = child_limits.raise_soft_limit()
    return UNLIMITED if soft == resource.RLIM_INFINITY else soft


def quiet_accept_failures(loop: asyncio.AbstractEventLoop) -> None:
    """Make `loop` say accept() failures once a minute, in one line; report everything else as before."""
    said = Occasional(log, logging.ERROR)

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_FAILED:
            loop.default_exception_handler(context)
            return
        err = context.get("exception")
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        said.log(f"cannot accept connections: {reason}; new ones wait until some close")

    loop.set_exception_handler(handle)
