"""A small Python client of the daemon's API (docs/api.md): what requesters, and the CLI, use.

One `Client` holds one connection to the daemon for its lifetime. Sets it creates without
`persistent=True` belong to that connection: the daemon releases them when the client closes, or
when its process exits or is killed. HTTP comes from the standard library's http.client over the
Unix socket (a synchronous client; the server is aiohttp). A failure the daemon reports is raised
as the same ShadowvaultError subclass, with the daemon's message. Each call waits at most `timeout`
for its answer (a set may take its freeze and commit timeouts); following a run's events waits as
long as the run; `probe()` tells in a few seconds whether what listens on the socket answers at all.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shadowvault import errors
from shadowvault.errors import ShadowvaultError
from shadowvault.service.settings import socket_path

DEFAULT_TIMEOUT = 600.0  # a set may take its freeze and commit timeouts, and wait for another's
PROBE_TIMEOUT = 5.0  # a daemon answers GET /v1/ping at once; one that does not is wedged (or no daemon)
BACKLOG_WAIT = 10.0  # seconds to keep trying while the socket's backlog is full (a burst of connections)
EVENT_SILENCE = 60.0  # a run's events stream says something every 15 s (a blank line at least): past
# this, the daemon is hung (stopped, or its event loop wedged), and following the run would never end


class DaemonUnavailableError(ShadowvaultError):
    """No daemon answers on the socket."""


class DaemonNotAnsweringError(DaemonUnavailableError):
    """Something accepts connections on the socket but does not answer in time."""


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix socket: http.client with a different connect()."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("sv", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        """Connect; while the listener's backlog is full (EAGAIN), try again for a few seconds."""
        deadline = time.monotonic() + min(self.timeout or BACKLOG_WAIT, BACKLOG_WAIT)
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket_path)
            except BlockingIOError:
                sock.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)
                continue
            except OSError:
                sock.close()
                raise
            self.sock = sock
            return


def daemon_error(message: str, kind: object, exit_status: object = None) -> ShadowvaultError:
    """The error the daemon reported, as the same ShadowvaultError subclass with the same exit status."""
    cls = getattr(errors, kind, None) if isinstance(kind, str) else None
    if not (isinstance(cls, type) and issubclass(cls, ShadowvaultError)):
        cls = ShadowvaultError
    try:
        error = cls(message)
    except TypeError:  # a subclass with a constructor of its own
        error = ShadowvaultError(message)
    if isinstance(exit_status, int) and not isinstance(exit_status, bool) and 0 < exit_status < 256:
        error.exit_code = exit_status
    return error


class Client:
    """The daemon at `socket_path` (default: $SHADOWVAULT_SOCKET, else /run/shadowvault/api.sock)."""

    def __init__(self, socket_file: Path | str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = str(socket_file or socket_path())
        self.timeout = timeout  # of each call; following a run's events waits as long as the run
        self._connection = _UnixConnection(self.socket_path, timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def probe(self, timeout: float = PROBE_TIMEOUT) -> None:
        """Make sure a daemon answers: a cheap call (GET /v1/ping) answered within `timeout` (the
        connection is kept for the calls). DaemonUnavailableError when none listens on the socket,
        DaemonNotAnsweringError when what listens does not answer in time (any answer will do)."""
        self._read(self._send("GET", "/v1/ping", None, timeout))

    def answers(self, timeout: float = PROBE_TIMEOUT) -> bool:
        """Whether a daemon answers on the socket within `timeout` (see `probe`)."""
        try:
            self.probe(timeout)
        except ShadowvaultError:
            return False
        return True

    def close(self) -> None:
        """Close the connection: the daemon releases the sets it owns."""
        self._connection.close()

    def _send(
        self, method: str, path: str, payload: bytes | None, timeout: float | None
    ) -> http.client.HTTPResponse:
        """Send a request; the response with its body unread. Connection failures are our errors.

        `timeout`: how long each read of the answer may wait (None: as long as it takes)."""
        reused = self._connection.sock is not None
        try:
            try:
                return self._exchange(method, path, payload, timeout)
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                if not reused:
                    answer = self._answer_sent_before()
                    if answer is None:
                        raise
                    return answer
                # The daemon closed this connection for being idle (it holds no set, or it would
                # not have): the request never ran. Once more on a new connection.
                self._connection.close()
                return self._exchange(method, path, payload, timeout)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            self._connection.close()
            if reused:  # it answered on this connection before: it stopped, or was killed, since
                raise DaemonUnavailableError(
                    f"the shadowvault daemon on {self.socket_path} went away"
                ) from err
            raise DaemonUnavailableError(f"no shadowvault daemon answers on {self.socket_path}") from err
        except TimeoutError as err:
            self._connection.close()
            within = "" if timeout is None else f" within {timeout:g} s"
            raise DaemonNotAnsweringError(
                f"the shadowvault daemon on {self.socket_path} did not answer{within}"
            ) from err
        except (OSError, http.client.HTTPException) as err:
            self._connection.close()
            raise ShadowvaultError(f"the shadowvault daemon on {self.socket_path}: {err}") from err

    def _exchange(
        self, method: str, path: str, payload: bytes | None, timeout: float | None
    ) -> http.client.HTTPResponse:
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        if self._connection.sock is None:
            self._connection.connect()
        assert self._connection.sock is not None
        self._connection.sock.settimeout(timeout)
        self._connection.request(method, path, body=payload, headers=headers)
        return self._connection.getresponse()

    def _answer_sent_before(self) -> http.client.HTTPResponse | None:
        """The answer the daemon sent before it read our request, if it did: it refuses a connection
        past its limits with a 503 as it comes in, then closes it (the request fails to be sent)."""
        with contextlib.suppress(OSError, http.client.HTTPException):
            return self._connection.getresponse()
        return None

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        try:
            return response.read()
        except TimeoutError as err:
            self._connection.close()
            raise DaemonNotAnsweringError(
                f"the shadowvault daemon on {self.socket_path} stopped answering"
            ) from err
        except (OSError, http.client.HTTPException) as err:
            self._connection.close()
            raise ShadowvaultError(f"the shadowvault daemon on {self.socket_path}: {err}") from err

    @staticmethod
    def _raise_for(response: http.client.HTTPResponse, data: bytes) -> None:
        """The daemon's error as the same ShadowvaultError subclass, with its message."""
        try:
            document = json.loads(data) if data else None
        except ValueError:
            document = None
        if isinstance(document, dict) and isinstance(document.get("error"), str):
            raise daemon_error(document["error"], document.get("kind"), document.get("exit_status"))
        raise ShadowvaultError(f"the shadowvault daemon answered {response.status} {response.reason}")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        response = self._send(method, path, payload, self.timeout)
        data = self._read(response)
        if response.status >= 400:
            self._raise_for(response, data)
        try:
            return json.loads(data) if data else None
        except ValueError as err:
            raise ShadowvaultError(f"the shadowvault daemon answered with malformed JSON: {err}") from None

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

    def providers(self) -> list[dict[str, Any]]:
        """Every provider, best first."""
        return self._call("GET", "/v1/providers")

    # -- runs: backups, restores and jobs.d jobs the daemon runs ----------------------------------

    def start_backup(self, repository: str, paths: list[str], **fields: Any) -> dict[str, Any]:
        """Start a backup (fields as in docs/api.md: password or password_file, tags, ...); the run."""
        return self._call("POST", "/v1/backups", {"repository": repository, "paths": paths, **fields})

    def start_restore(self, repository: str, snapshot: str, target: str, **fields: Any) -> dict[str, Any]:
        """Start a files restore; the run."""
        body = {"repository": repository, "snapshot": snapshot, "target": target, **fields}
        return self._call("POST", "/v1/restores", body)

    def start_component_restore(
        self, repository: str, restore: dict[str, Any], **fields: Any
    ) -> dict[str, Any]:
        """Start a component restore (`restore`: a ComponentRestoreRequest as JSON); the run."""
        return self._call(
            "POST", "/v1/component-restores", {"repository": repository, "restore": restore, **fields}
        )

    def start_writer_restore(self, repository: str, order: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """Start a restore through writers (`order`: a WriterRestoreOrder as JSON); the run."""
        return self._call("POST", "/v1/writer-restores", {"repository": repository, "order": order, **fields})

    def start_vm_backup(self, repository: str, request: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """Start a VM backup (`request`: a VmBackupRequest as JSON); the run."""
        return self._call("POST", "/v1/vm-backups", {"repository": repository, "request": request, **fields})

    def start_vm_restore(self, repository: str, order: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """Start a VM restore (`order`: a VmRestoreOrder as JSON); the run."""
        return self._call("POST", "/v1/vm-restores", {"repository": repository, "order": order, **fields})

    def jobs(self) -> list[dict[str, Any]]:
        """Every jobs.d job with its last recorded run."""
        return self._call("GET", "/v1/jobs")

    def start_job(self, name: str) -> dict[str, Any]:
        """Run a jobs.d job now; the run."""
        return self._call("POST", f"/v1/jobs/{_quote(name)}/runs")

    def runs(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/runs")

    def run(self, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/runs/{_quote(run_id)}")

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/runs/{_quote(run_id)}")

    def events(self, run_id: str, silence: float = EVENT_SILENCE) -> Iterator[dict[str, Any]]:
        """The run's events as they come, until it ends (JSON lines; each has a `message_type`).

        A run may wait its turn, or a writer's freeze, for long without an event, but the daemon
        sends a blank line every 15 s meanwhile: `silence` seconds without a byte is a hung daemon
        (DaemonNotAnsweringError), not a quiet run."""
        response = self._send("GET", f"/v1/runs/{_quote(run_id)}/events", None, silence)
        if response.status >= 400:
            self._raise_for(response, self._read(response))
        try:
            for line in response:
                if line.strip():
                    yield json.loads(line)
        except TimeoutError as err:
            self._connection.close()
            raise DaemonNotAnsweringError(
                f"the shadowvault daemon on {self.socket_path} stopped answering: nothing for "
                f"{silence:g} s while following run {run_id}"
            ) from err
        except (OSError, http.client.HTTPException) as err:  # the daemon went away mid-run
            self._connection.close()
            raise ShadowvaultError(f"the shadowvault daemon on {self.socket_path}: {err}") from err
        finally:
            response.close()

    def wait(self, run_id: str, on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Follow the run's events to its end (each to `on_event`); the run's last report."""
        for event in self.events(run_id):
            if on_event is not None:
                on_event(event)
        return self.run(run_id)

    def metrics(self) -> str:
        """The Prometheus text of /metrics."""
        response = self._send("GET", "/metrics", None, self.timeout)
        data = self._read(response)
        if response.status >= 400:
            self._raise_for(response, data)
        return data.decode()

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
