"""Socket activation on this host: `systemd-socket-activate` plays systemd's part (listen, hand over fd 3)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shadowvault.client import Client
from tests.fixtures.servers import stop_pid
from tests.fixtures.tools import require_tools

_SO_ACCEPTCON = 0x10000  # the "Flags" bit /proc/net/unix shows for a listening socket


def _listening(path: Path) -> bool:
    """Whether a Unix socket at `path` is listening, read from /proc so that asking starts nothing.

    The path exists from bind(); a connect before listen() is refused, which is a race, not a failure.
    """
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == str(path) and int(fields[3], 16) & _SO_ACCEPTCON:
            return True
    return False


_DAEMON = (sys.executable, "-m", "shadowvault.cli.launch", "daemon")


def test_the_daemon_serves_on_the_socket_systemd_hands_over() -> None:
    require_tools("systemd-socket-activate")
    base = Path(tempfile.mkdtemp(prefix="sv-activate-"))
    sock = base / "api.sock"
    env = {k: v for k, v in os.environ.items() if k not in ("SHADOWVAULT_SOCKET", "NOTIFY_SOCKET")}
    env["SHADOWVAULT_SOCKET"] = str(base / "unused.sock")  # the handed-over socket wins over the setting
    try:
        activator = subprocess.Popen(
            ["systemd-socket-activate", "-l", str(sock), *_DAEMON],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_until_listening(sock, activator)
            with Client(sock, timeout=60) as client:
                volumes = client.volumes()
                assert any(v["mount_point"] == "/" for v in volumes)
                assert client.shadow_sets() is not None
            assert not (base / "unused.sock").exists()
        finally:
            log = _stop(activator)
        assert "Traceback" not in log, log
        assert sock.exists(), "the socket systemd owns stays for the next activation"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _wait_until_listening(sock: Path, activator: subprocess.Popen[str]) -> None:
    """The activator listens first; the daemon starts on the first call."""
    deadline = time.monotonic() + 30
    while not _listening(sock):
        assert activator.poll() is None, activator.stderr.read() if activator.stderr else ""
        assert time.monotonic() < deadline, "systemd-socket-activate did not listen"
        time.sleep(0.05)


def _stop(activator: subprocess.Popen[str]) -> str:
    """SIGTERM (the activator exec'd the daemon: it is the daemon that stops); its stderr."""
    stop_pid(activator.pid, timeout=60, proc=activator)
    return activator.stderr.read() if activator.stderr else ""
