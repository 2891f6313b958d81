"""Whether a command goes through the daemon: when it answers on its socket, unless --no-daemon.

`shadows ...`, `exec`, `backup` ask `shadow_sets()` for their shadow sets and `jobs run` asks
`daemon_client()`. With a daemon listening on the API socket (`$SHADOWVAULT_SOCKET`, default
/run/shadowvault/api.sock) the daemon does the coordinating, so a CLI run and other requesters share
one coordinator; without one, or with `--no-daemon` (`SHADOWVAULT_NO_DAEMON=1`), this process does,
under the same machine locks. The output is the same either way. A daemon is asked first for
GET /v1/ping, with a short timeout: one that accepts but does not answer (wedged) is said in one
warning, and the command works in process.

A run the daemon would do with a repository (a restore, a VM backup) goes there only when the daemon
can do it as this caller would: `repository_daemon()` keeps a repository that is not on this
machine's filesystem (S3) in this process, where the caller's credentials, profile and cache
directory are (the daemon's environment is not the caller's, and secrets do not cross the socket);
`restore_daemon()` also keeps the restores of a user who is not root here, since the daemon restores
for root only and such a user restores in process what they may (as with --no-daemon).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from shadowvault import interrupts
from shadowvault.cli.global_options import NO_DAEMON
from shadowvault.cli.output import warn
from shadowvault.errors import ShadowvaultError
from shadowvault.service.settings import socket_path
from shadowvault.shadow.requesting import IN_PROCESS, ShadowSets

if TYPE_CHECKING:
    from shadowvault.client import Client

CANCEL_TIMEOUT = 30.0  # seconds to reach the daemon to cancel a run we no longer follow


def daemon_client() -> Client | None:
    """A connection to the daemon for the running command (closed with it), or None to work in process."""
    root = click.get_current_context().find_root()
    if root.meta.get(NO_DAEMON) or not socket_path().exists():
        return None  # no socket, no daemon: the HTTP client is not even imported (~30 ms, cold ~60)
    # only a command that may use the daemon pays for the client
    from shadowvault.client import Client, DaemonNotAnsweringError

    client = Client()
    try:
        client.probe()  # a daemon that accepts but does not answer must not hang the command
    except DaemonNotAnsweringError as err:
        client.close()
        warn(f"{err}; working without it")
        return None
    except ShadowvaultError:
        client.close()
        return None  # no daemon listens: in process, as without a socket
    root.call_on_close(client.close)
    return client


def repository_daemon(location: str) -> Client | None:
    """The daemon for a run on the repository at `location`, or None to run it in this process:
    a remote repository (S3) is opened where the caller's credentials are (module docstring)."""
    from shadowvault.repo.storage import is_remote

    return None if is_remote(location) else daemon_client()


def restore_daemon(location: str) -> Client | None:
    """The daemon for a restore from `location`, or None to restore in this process: the daemon
    restores for root only, so anyone else restores here, what they may (module docstring)."""
    return None if os.geteuid() != 0 else repository_daemon(location)


def shadow_sets() -> ShadowSets:
    """The ShadowSets for the running command: the daemon's, or this process's."""
    client = daemon_client()
    if client is None:
        return IN_PROCESS
    from shadowvault.daemon_sets import ThroughDaemon

    return ThroughDaemon(client)


def finished_run(
    client: Client,
    start: Callable[[], dict[str, Any]],
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Start a run in the daemon (`start` asks for it) and follow it (each event to `on_event`); its
    summary, or the error it ended with, raised as the same error with the same exit status.
    Interrupted (Ctrl-C, SIGTERM from systemd stopping a job's unit), the command cancels the run
    before it ends, as it would stop the work it did in process; an interrupt while the daemon
    starts the run waits for the run's id, so that even a run just started is cancelled."""
    from shadowvault.client import Client, daemon_error

    run: dict[str, Any] | None = None
    try:
        with interrupts.held_back():
            run = start()
        report = client.wait(run["id"], on_event)
    except BaseException:
        if run is not None:
            with contextlib.suppress(Exception), Client(client.socket_path, timeout=CANCEL_TIMEOUT) as other:
                other.cancel_run(run["id"])  # a new connection: the streaming one is mid-response
        raise
    if report["result"] is not None:
        return report["result"]
    message = report.get("error") or "the run failed"
    raise daemon_error(message, report.get("error_kind"), report.get("exit_status"))
