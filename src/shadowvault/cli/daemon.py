"""CLI command: `shadowvault daemon`: the coordinating service in the foreground (systemd runs it)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from shadowvault.service import server
from shadowvault.service.settings import socket_path


@click.command("daemon")
@click.option(
    "--socket",
    "socket_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The API socket (default: $SHADOWVAULT_SOCKET, else /run/shadowvault/api.sock).",
)
def daemon(socket_file: Path | None) -> None:
    """Run the coordinator as a service: the local API on a Unix socket (docs/api.md).

    Stays in the foreground and logs to stderr; tells systemd when it is ready (Type=notify).
    SIGTERM stops it: running requests end, and the sets that are not persistent are released.
    """
    logger = logging.getLogger("shadowvault")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # a service says what it does; -v still adds debug
    server.run(socket_file or socket_path())


COMMANDS: list[click.Command] = [daemon]
