"""A small synchronous QMP client: JSON over QEMU's Unix monitor socket, with deadlines and events.

Synchronous on purpose: writer events run in the coordinator's worker threads and each call must end
within a timeout, so every read has a deadline and a lost connection raises at once (QmpLostError),
which the caller turns into cleanup (cancel the job, drop temporary nodes and bitmaps).
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from shadowvault.errors import ShadowvaultError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0


# what the commands whose answers are read answer: an object, or a list of objects
RETURNS: dict[str, type] = {
    "query-status": dict,
    "query-block": list,
    "query-named-block-nodes": list,
    "query-block-jobs": list,
    "query-jobs": list,
}


class QmpError(ShadowvaultError):
    """QEMU answered a command with an error, or the monitor cannot be reached."""


class QmpLostError(QmpError):
    """The connection to the monitor ended or timed out mid-conversation."""


def monitor_gone(path: str) -> bool:
    """Whether nothing listens at the monitor socket `path` any more: its QEMU has exited.

    A running QEMU keeps listening on its QMP socket even while a client holds the monitor (a second
    client waits in the backlog), so a refused connection or a vanished socket means QEMU is gone:
    its jobs, temporary nodes and unsaved bitmaps went with it, and there is nothing to clean up."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(path)
        except OSError as err:
            return err.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK)
    return False


class QmpClient:
    """One connection to one QEMU monitor; thread-safe (one command at a time)."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self.greeting: dict[str, Any] = {}

    def connect(self) -> QmpClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as err:
            sock.close()
            raise QmpError(f"cannot reach the QEMU monitor at {self.path}: {err.strerror or err}") from err
        self._sock = sock
        deadline = time.monotonic() + self.timeout
        self.greeting = self._read(deadline)
        self.execute("qmp_capabilities")
        return self

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> QmpClient:
        return self.connect() if self._sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def _read(self, deadline: float) -> dict[str, Any]:
        """The next message from QEMU (a reply or an event)."""
        while b"\n" not in self._buffer:
            if self._sock is None:
                raise QmpLostError(f"QEMU monitor {self.path}: not connected")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QmpLostError(f"QEMU monitor {self.path}: no answer in time")
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as err:
                self.close()
                raise QmpLostError(f"QEMU monitor {self.path}: {err.strerror or err}") from err
            if not data:
                self.close()
                raise QmpLostError(f"QEMU monitor {self.path}: the connection was closed")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("error", {}), dict)
            or ("event" in message and not isinstance(message["event"], str))
            or not isinstance(message.setdefault("data", {}) if "event" in message else {}, dict)
        ):
            # not QEMU speaking QMP: the conversation cannot go on (the caller cleans up, as for a loss)
            self.close()
            raise QmpLostError(f"QEMU monitor {self.path}: not a QMP message: {line[:80]!r}")
        return message

    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Run one command; its `return` value, QmpError for QEMU's `error`."""
        with self._lock:
            if self._sock is None:
                raise QmpLostError(f"QEMU monitor {self.path}: not connected")
            ident = f"sv-{next(self._ids)}"
            message: dict[str, Any] = {"execute": command, "id": ident}
            if arguments:
                message["arguments"] = arguments
            log.debug("qmp %s: %s %s", self.path, command, arguments or "")
            try:
                self._sock.sendall(json.dumps(message).encode() + b"\n")
            except OSError as err:
                self.close()
                raise QmpLostError(f"QEMU monitor {self.path}: {err.strerror or err}") from err
            deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
            while True:
                reply = self._read(deadline)
                if "event" in reply:
                    self._events.append(reply)
                    continue
                if reply.get("id") != ident:
                    continue
                if "error" in reply:
                    raise QmpError(f"{command}: {reply['error'].get('desc', reply['error'])}")
                return self._shaped(command, reply.get("return"))

    def _shaped(self, command: str, value: Any) -> Any:
        """`value` if it has the shape QEMU answers `command` with (callers read it as such: a
        query-status answering a list was an AttributeError), else a lost connection."""
        shape = RETURNS.get(command)
        if shape is None or (isinstance(value, dict) and shape is dict):
            return value
        if isinstance(value, list) and shape is list and all(isinstance(item, dict) for item in value):
            return value
        self.close()
        raise QmpLostError(
            f"QEMU monitor {self.path}: {command} answered {type(value).__name__}, not the "
            f"{'object' if shape is dict else 'list of objects'} QEMU answers"
        )

    def wait_event(
        self,
        names: Iterable[str],
        timeout: float,
        match: Callable[[dict[str, Any]], bool] = lambda event: True,
    ) -> dict[str, Any]:
        """The first event named in `names` that `match`es (queued ones first); QmpLostError past timeout."""
        wanted = set(names)
        with self._lock:
            for event in self._events:
                if event["event"] in wanted and match(event):
                    self._events.remove(event)
                    return event
            deadline = time.monotonic() + timeout
            while True:
                event = self._read(deadline)
                if "event" not in event:
                    continue
                if event["event"] in wanted and match(event):
                    return event
                self._events.append(event)
                del self._events[:-256]  # events nobody waits for must not pile up
