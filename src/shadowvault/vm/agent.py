"""The QEMU guest agent (qemu-ga) over the host side of its virtio-serial channel.

The channel is a byte stream that may hold stale replies from an earlier client, so every
conversation starts with `guest-sync-delimited` (qemu-ga answers after a 0xFF byte) and only then
sends the command. Each call has a deadline: a guest that does not answer is treated as having no
agent (the backup is then crash-consistent and says so).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any

from shadowvault.errors import ShadowvaultError

log = logging.getLogger(__name__)

SYNC_TIMEOUT = 3.0


class AgentError(ShadowvaultError):
    """The guest agent did not answer in time, or answered with an error."""


class GuestAgent:
    """One connection to one guest agent socket."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> GuestAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
            except OSError as err:
                sock.close()
                raise AgentError(f"guest agent {self.path}: {err.strerror or err}") from err
            self._sock = sock
            self._buffer = b""
            self._sync()
        return self._sock

    def _recv(self, deadline: float) -> None:
        assert self._sock is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AgentError(f"guest agent {self.path}: no answer in time")
        self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            raise AgentError(f"guest agent {self.path}: no answer in time") from None
        except OSError as err:
            raise AgentError(f"guest agent {self.path}: {err.strerror or err}") from err
        if not data:
            raise AgentError(f"guest agent {self.path}: the channel was closed")
        self._buffer += data

    def _read_json(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            self._recv(deadline)
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def _sync(self) -> None:
        assert self._sock is not None
        token = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
        sync = {"execute": "guest-sync-delimited", "arguments": {"id": token}}
        self._sock.sendall(json.dumps(sync).encode())
        deadline = time.monotonic() + min(self.timeout, SYNC_TIMEOUT)
        while True:
            while b"\xff" not in self._buffer:
                self._recv(deadline)
            self._buffer = self._buffer.split(b"\xff", 1)[1]
            try:
                reply = self._read_json(deadline)
            except json.JSONDecodeError:
                continue
            if reply.get("return") == token:
                return

    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Run one agent command; its `return` value (AgentError on error, timeout or a closed channel)."""
        try:
            sock = self._connect()
            message: dict[str, Any] = {"execute": command}
            if arguments:
                message["arguments"] = arguments
            log.debug("qga %s: %s", self.path, command)
            sock.sendall(json.dumps(message).encode() + b"\n")
            reply = self._read_json(time.monotonic() + (self.timeout if timeout is None else timeout))
        except (AgentError, OSError, json.JSONDecodeError) as err:
            self.close()  # a half-read reply must not be taken for the next command's
            if isinstance(err, AgentError):
                raise
            raise AgentError(f"guest agent {self.path}: {err}") from err
        if "error" in reply:
            raise AgentError(f"guest agent: {command}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    def answers(self) -> bool:
        """Whether the agent answers a ping now (within SYNC_TIMEOUT)."""
        try:
            self.execute("guest-ping", timeout=SYNC_TIMEOUT)
        except AgentError:
            return False
        return True
