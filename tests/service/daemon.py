"""A real `shadowvault daemon` process for a test, on a socket in a temporary directory.

The daemon tells us it is ready the way it tells systemd: READY=1 on a NOTIFY_SOCKET of ours.
It is always stopped by its PID (SIGTERM, then SIGKILL if it does not end).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shadowvault.shadow import exposure as exposing
from shadowvault.shadow.store import ShadowStore

READY_TIMEOUT = 60.0


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    socket: Path
    log: Path
    notices: socket.socket

    def next_notice(self, timeout: float = READY_TIMEOUT) -> str:
        """The next sd_notify message the daemon sent."""
        self.notices.settimeout(timeout)
        return self.notices.recv(4096).decode()

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM, and its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running_daemon(
    *options: str,
    public: bool = False,
    environment: dict[str, str | None] | None = None,
    nofile: tuple[int, int] | None = None,
) -> Iterator[Daemon]:
    """A daemon on `<tmp>/api.sock`; `public`: the directory is open to every user (for a non-root
    client); `environment`: variables set (or, given None, removed) in the daemon's environment;
    `nofile`: the (soft, hard) descriptor limits it starts with, as a service manager sets them."""
    base = Path(tempfile.mkdtemp(prefix="sv-daemon-"))
    if public:
        base.chmod(0o755)
    notices = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notices.bind(str(base / "notify.sock"))
    env = dict(
        os.environ, SHADOWVAULT_SOCKET=str(base / "run" / "api.sock"), NOTIFY_SOCKET=str(base / "notify.sock")
    )
    for name, value in (environment or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    log = base / "daemon.log"
    with open(log, "wb") as log_file:
        limits = ["prlimit", f"--nofile={nofile[0]}:{nofile[1]}", "--"] if nofile else []
        process = subprocess.Popen(
            [*limits, sys.executable, "-m", "shadowvault.cli.launch", "daemon", *options],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    daemon = Daemon(process=process, socket=base / "run" / "api.sock", log=log, notices=notices)
    try:
        try:
            ready = daemon.next_notice()
        except TimeoutError:
            raise AssertionError(f"the daemon did not get ready:\n{daemon.log_text()}") from None
        assert ready == "READY=1", ready
        yield daemon
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        notices.close()
        # A test that failed midway must not leave an exposure mounted: it would keep the test's loop
        # filesystem busy (never unmounted, its loop device never detached). The sets stay: a test
        # may start another daemon to find them.
        with contextlib.suppress(Exception):
            store = ShadowStore()
            for set_id in {e.set_id for e in exposing.exposures(store)}:
                exposing.unexpose(store, set_id=set_id)
        shutil.rmtree(base, ignore_errors=True)


def raw_call(daemon_socket: Path, method: str, path: str, body: bytes = b"") -> tuple[int, dict]:
    """One HTTP request as any client could send it (no shadowvault.client checks): the status and
    the JSON body of the answer."""
    connection = http.client.HTTPConnection("sv")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(daemon_socket))
    connection.sock = sock
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()
