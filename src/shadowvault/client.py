"""A small Python client of the daemon's API (docs/api.md): what requesters, and the CLI, use.

One `Client` holds one connection to the daemon for its lifetime. Sets it creates without
`persistent=True` belong to that connection: the daemon releases them when the client closes, or
when its process exits or is killed. HTTP comes from the standard library's http.client over the
Unix socket (a synchronous client; the server is aiohttp). A failure the daemon reports is raised
as the same ShadowvaultError subclass, with the daemon's message.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shadowvault import errors
from shadowvault.errors import ShadowvaultError
from shadowvault.service.settings import socket_path

DEFAULT_TIMEOUT = 600.0  # a set may take its freeze and commit timeouts, and wait for another's


class DaemonUnavailableError(ShadowvaultError):
    """No daemon answers on the socket."""


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix socket: http.client with a different connect()."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("sv", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _error_class(kind: object) -> type[ShadowvaultError]:
    cls = getattr(errors, kind, None) if isinstance(kind, str) else None
    if isinstance(cls, type) and issubclass(cls, ShadowvaultError):
        return cls
    return ShadowvaultError


class Client:
    """The daemon at `socket_path` (default: $SHADOWVAULT_SOCKET, else /run/shadowvault/api.sock)."""

    def __init__(self, socket_file: Path | str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = str(socket_file or socket_path())
        self._connection = _UnixConnection(self.socket_path, timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def answers(self) -> bool:
        """Whether a daemon listens on the socket (a connection is made and kept for the calls)."""
        try:
            self._connection.connect()
        except OSError:
            self._connection.close()
            return False
        return True

    def close(self) -> None:
        """Close the connection: the daemon releases the sets it owns."""
        self._connection.close()

    def _exchange(
        self, method: str, path: str, payload: bytes | None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        reused = self._connection.sock is not None
        try:
            self._connection.request(method, path, body=payload, headers=headers)
            response = self._connection.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            if not reused:
                raise
            # The daemon closed this connection for being idle (it holds no set, or it would not
            # have): the request never ran. Once more on a new connection.
            self._connection.close()
            self._connection.request(method, path, body=payload, headers=headers)
            response = self._connection.getresponse()
        return response, response.read()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        try:
            response, data = self._exchange(method, path, payload)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            self._connection.close()
            raise DaemonUnavailableError(f"no shadowvault daemon answers on {self.socket_path}") from err
        except (OSError, http.client.HTTPException) as err:
            self._connection.close()
            raise ShadowvaultError(f"the shadowvault daemon on {self.socket_path}: {err}") from err
        try:
            document = json.loads(data) if data else None
        except ValueError:
            document = None
        if response.status >= 400:
            if isinstance(document, dict) and isinstance(document.get("error"), str):
                raise _error_class(document.get("kind"))(document["error"])
            raise ShadowvaultError(f"the shadowvault daemon answered {response.status} {response.reason}")
        return document

    def volumes(self) -> list[dict[str, Any]]:
        """Mounted filesystems and the providers that can shadow each."""
        return self._call("GET", "/v1/volumes")

    def writers(self) -> list[dict[str, Any]]:
        """Every writer and its state."""
        return self._call("GET", "/v1/writers")

    def shadow_sets(self) -> list[dict[str, Any]]:
        """Every shadow set, oldest first."""
        return self._call("GET", "/v1/shadow-sets")

    def shadow_set(self, set_id: str) -> dict[str, Any]:
        """One shadow set by id or unique prefix."""
        return self._call("GET", f"/v1/shadow-sets/{_quote(set_id)}")

    def create_shadow_set(
        self,
        volumes: list[str],
        writers: list[str] | None = None,
        provider: str = "auto",
        persistent: bool = False,
        **options: Any,
    ) -> dict[str, Any]:
        """Create a set; its manifest. Not persistent: it lives as long as this client's connection.

        `options`: auto_writers, freeze_timeout, commit_timeout (as in SetOptions).
        """
        body = {"volumes": volumes, "writers": writers or [], "provider": provider, "persistent": persistent}
        return self._call("POST", "/v1/shadow-sets", {**body, **options})

    def delete_shadow_set(self, set_id: str) -> str:
        """Delete a set (id or unique prefix); its full id."""
        return self._call("DELETE", f"/v1/shadow-sets/{_quote(set_id)}")["deleted"][0]

    def complete_shadow_set(self, set_id: str, succeeded: bool) -> dict[str, Any]:
        """Tell the set's writers how the backup went (backup_complete) and release it; its last manifest."""
        return self._call("POST", f"/v1/shadow-sets/{_quote(set_id)}/complete", {"succeeded": succeeded})

    def expose(self, set_id: str, volume: str | int | None = None, at: str | None = None) -> dict[str, Any]:
        """Mount one shadow read-only (nosuid, nodev) at `at`, or in the caller's private directory."""
        return self._call("POST", f"/v1/shadow-sets/{_quote(set_id)}/exposures", {"volume": volume, "at": at})

    def unexpose(self, set_id: str | None = None, at: str | None = None) -> list[str]:
        """Unmount the exposure at `at`, or every exposure of a set; the unmounted paths."""
        query = f"?at={urllib.parse.quote(at)}" if at is not None else ""
        path = f"/v1/shadow-sets/{_quote(set_id)}/exposures" if set_id is not None else "/v1/exposures"
        return self._call("DELETE", path + query)["unexposed"]

    @contextlib.contextmanager
    def taken_shadow_set(self, volumes: list[str], **options: Any) -> Iterator[dict[str, Any]]:
        """A set for a `with` block, completed on leaving it: succeeded unless the block raised.

        The manifest yielded is updated in place with the completed one (the writers' last states).
        """
        manifest = self.create_shadow_set(volumes, persistent=False, **options)
        succeeded = False
        try:
            yield manifest
            succeeded = True
        finally:
            manifest.update(self.complete_shadow_set(manifest["id"], succeeded))


def _quote(segment: str) -> str:
    """A set id as one path segment (ids are plain, but a caller's typo must not become another call)."""
    return urllib.parse.quote(segment, safe="")
