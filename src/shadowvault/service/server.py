"""The daemon's server: the Unix socket, the aiohttp application, and a clean start and stop.

Start: the descriptor limit is raised, the sets of ended requesters are reaped, the socket is bound
(a stale socket file is replaced; a live daemon on it is an error), READY=1 is sent. Connections are
admitted, timed and answered as connections.py says. Stop (SIGTERM, SIGINT): STOPPING=1,
no new connections, running requests finish, then every set that is not persistent is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from shadowvault.errors import ShadowvaultError
from shadowvault.repo.s3_credentials import set_default_chain_owner
from shadowvault.service import private_exposure, sd_notify
from shadowvault.service.activation import inherited_socket
from shadowvault.service.admission import Admission
from shadowvault.service.connections import ApiSite, connection_factory
from shadowvault.service.descriptors import quiet_accept_failures, raise_limit
from shadowvault.service.handlers import Api
from shadowvault.service.idle import IdleConnections
from shadowvault.service.ownership import Ownership
from shadowvault.service.policy import GroupPolicy, configured_policy
from shadowvault.service.responses import errors_as_json
from shadowvault.service.run_handlers import RunApi
from shadowvault.service.runs import Runs
from shadowvault.service.set_runs import SetRuns
from shadowvault.service.settings import COORDINATOR_THREADS, DEFAULT_LIMITS, WORKER_THREADS, Limits
from shadowvault.service.shadow_sets import ShadowSetService
from shadowvault.shadow.store import ShadowStore

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 120.0  # a freeze in progress may take its freeze and commit timeouts to end


class SocketInUseError(ShadowvaultError):
    """Another daemon already answers on the socket."""


def bind_socket(path: Path) -> socket.socket:
    """A listening Unix socket at `path`, reachable by every local user (the policy decides who may ask)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as err:
        raise ShadowvaultError(f"cannot make the socket's directory {path.parent}: {_reason(err)}") from err
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except FileNotFoundError:
        pass
    except ConnectionRefusedError:
        _remove_stale(path)
    except OSError as err:
        raise ShadowvaultError(f"cannot use the socket {path}: {_reason(err)}") from err
    else:
        raise SocketInUseError(f"a daemon is already listening on {path}")
    finally:
        probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o666)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise ShadowvaultError(f"cannot listen on {path}: {_reason(err)}") from err
    sock.setblocking(False)
    return sock


def _reason(err: OSError) -> str:
    """What went wrong, in words: socket errors without an errno (a path too long) have no strerror."""
    return err.strerror or str(err)


def _remove_stale(path: Path) -> None:
    """Remove the socket file a daemon left when it ended without removing it; anything else at
    `path` (a regular file refuses connections too: a mistyped --socket) is not ours to delete."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return  # gone meanwhile
    if not stat.S_ISSOCK(mode):
        raise ShadowvaultError(f"cannot use the socket {path}: it exists and is not a socket")
    path.unlink()


def _remove_own(path: Path, bound: os.stat_result) -> None:
    """Remove the socket file this daemon bound, unless another daemon has bound its own there since
    (the file was removed under us, and a newer daemon now answers on the path)."""
    with contextlib.suppress(FileNotFoundError):
        now = path.lstat()
        if (now.st_dev, now.st_ino) == (bound.st_dev, bound.st_ino):
            path.unlink()


def make_app(api: Api, run_api: RunApi, limits: Limits, idle: IdleConnections) -> web.Application:
    app = web.Application(client_max_size=limits.body_bytes, middlewares=[idle.middleware, errors_as_json])
    app.add_routes(api.routes())
    app.add_routes(run_api.routes())
    return app


# What a run of ours says when an S3 repository finds no credentials here: ours are not the caller's.
DAEMON_CREDENTIALS_HINT = (
    "a job names its own in its environment_file (docs/jobs.md); else give the daemon "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in its service's environment, or root's ~/.aws/credentials"
)


async def serve(path: Path, policy: GroupPolicy | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
    """Serve the API on `path` until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # First: a daemon already running is told before anything else happens.
    policy = policy or configured_policy()  # a broken [api] is told before the socket is taken
    set_default_chain_owner("the daemon", DAEMON_CREDENTIALS_HINT)
    inherited = inherited_socket()
    sock = inherited or bind_socket(path)
    bound = None if inherited else path.lstat()  # what the stop removes: this socket file, none other
    if inherited is not None and isinstance(inherited.getsockname(), str) and inherited.getsockname():
        path = Path(inherited.getsockname())
    limits = _within_descriptors(limits)
    quiet_accept_failures(loop)
    loop.set_default_executor(ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="sv-worker"))
    coordinator_pool = ThreadPoolExecutor(COORDINATOR_THREADS, thread_name_prefix="sv-coordinator")
    await asyncio.to_thread(_reap)
    sets = ShadowSetService(policy, SetRuns(), private_exposure.base_for(path))
    ownership = Ownership(sets.release)
    api = Api(policy, limits, ownership, sets, coordinator_pool)
    runs = Runs()
    idle = IdleConnections(limits.header_timeout, limits.idle_timeout, ownership.owns_sets)
    runner = web.AppRunner(
        make_app(api, RunApi(api, runs), limits, idle),
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    try:
        await ApiSite(runner, sock, connection_factory(runner, Admission(limits), idle)).start()
        ownership.start()
        idle.start()
        log.info("listening on %s%s", path, " (handed over by systemd)" if inherited else "")
        sd_notify.notify("READY=1")
        await stop.wait()
        log.info("stopping")
        sd_notify.notify("STOPPING=1")
    finally:
        await idle.stop()
        runs.cancel_all("the daemon is stopping")  # running backups and restores unwind, their streams end
        await runner.cleanup()  # no new connections; running requests end; connections close
        await asyncio.to_thread(runs.wait)
        await asyncio.to_thread(coordinator_pool.shutdown)  # a creation still running ends first
        await ownership.stop()
        released = await asyncio.to_thread(sets.release_ours, os.getpid())
        if released:
            log.info("released shadow set(s) %s", ", ".join(released))
        if bound is not None:  # systemd's socket stays where systemd keeps it, for the next start
            _remove_own(path, bound)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _within_descriptors(limits: Limits) -> Limits:
    """The limits, with as many descriptors as the daemon may have (and its connections within them)."""
    descriptors = raise_limit()
    within = limits.within(descriptors)
    if within.connections < limits.connections:
        log.info(
            "at most %d connections: the daemon may open %d descriptors", within.connections, descriptors
        )
    return within


def _reap() -> None:
    """Sets of requesters that ended while no daemon ran (a daemon killed before) are released."""
    try:
        released = ShadowStore().reap()
    except ShadowvaultError as err:
        log.warning("sets of ended requesters were not released: %s", err)
        return
    if released:
        log.info("released shadow set(s) of ended requesters: %s", ", ".join(released))


def run(path: Path, policy: GroupPolicy | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
    """Run the daemon in this thread until it is told to stop."""
    asyncio.run(serve(path, policy, limits))
