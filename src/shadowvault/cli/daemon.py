"""CLI command: `shadowvault daemon`: the coordinating service in the foreground (systemd runs it)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import click

from shadowvault.service.settings import DEFAULT_LIMITS, socket_path


@click.command("daemon")
@click.option(
    "--socket",
    "socket_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The API socket (default: $SHADOWVAULT_SOCKET, else /run/shadowvault/api.sock).",
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(min=0.001),
    default=DEFAULT_LIMITS.read_timeout,
    show_default=True,
    metavar="SECONDS",
    help="A client must send its request body within this time (408 past it).",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0.001),
    default=DEFAULT_LIMITS.header_timeout,
    show_default=True,
    metavar="SECONDS",
    help="A client must send a request's line and headers within this time of its first byte (408 past it).",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0.001),
    default=DEFAULT_LIMITS.idle_timeout,
    show_default=True,
    metavar="SECONDS",
    help="A connection waiting this long for a request is closed (unless it holds a shadow set).",
)
def daemon(socket_file: Path | None, read_timeout: float, header_timeout: float, idle_timeout: float) -> None:
    """Run the coordinator as a service: the local API on a Unix socket (docs/api.md).

    Stays in the foreground and logs to stderr; tells systemd when it is ready (Type=notify).
    SIGTERM stops it: running requests end, and the sets that are not persistent are released.
    """
    logger = logging.getLogger("shadowvault")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # a service says what it does; -v still adds debug
    from shadowvault.service import server  # aiohttp: only the daemon pays its import time

    limits = dataclasses.replace(
        DEFAULT_LIMITS, read_timeout=read_timeout, header_timeout=header_timeout, idle_timeout=idle_timeout
    )
    server.run(socket_file or socket_path(), limits=limits)


COMMANDS: list[click.Command] = [daemon]
