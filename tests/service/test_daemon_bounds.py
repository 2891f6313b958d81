"""What a client can do to the daemon, and what it cannot: floods of connections, descriptors run
out, long quiet runs, garbage, hang-ups.

Real daemons on real sockets; the flood comes from another user (uid 65534), as it would on a
machine, and the daemon's log is read as an administrator would read it.
"""

from __future__ import annotations

import json
import re
import resource
import socket
import subprocess
import threading
import time
from pathlib import Path

from shadowvault.client import Client
from tests.archive.helpers import PASSWORD
from tests.fixtures.unprivileged import AS_NOBODY, PYTHON
from tests.service.daemon import Daemon, running_daemon
from tests.service.test_runs import _slow_writer, repo  # noqa: F401  (repo is a fixture)

# Run as uid 65534: open COUNT connections, send half a request line on each and hold them; then one
# more connection, and what the daemon said on it, and a call of the Python client; then hold
# everything until stdin closes.
FLOOD = """\
import json, socket, sys, time
path, count = sys.argv[1], int(sys.argv[2])
held, failed = [], 0
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(path)
        s.sendall(b"GET /v1/vol")
        held.append(s)
    except OSError:
        failed += 1
        s.close()
said = b""
for _ in range(500):  # while the daemon works through the backlog (EAGAIN when it is full)
    extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    extra.settimeout(10)
    try:
        extra.connect(path)
    except BlockingIOError:
        extra.close()
        time.sleep(0.02)
        continue
    while chunk := extra.recv(65536):
        said += chunk
    break
from shadowvault.client import Client
try:
    Client(path, timeout=10).volumes()
    refused = ""
except Exception as err:
    refused = f"{type(err).__name__}: {err}"
seen = {"held": len(held), "failed": failed, "extra": said.decode(errors="replace"), "refused": refused}
print(json.dumps(seen), flush=True)
sys.stdin.read()
"""


def _answered_promptly(daemon: Daemon, calls: int = 5, limit: float = 3.0) -> list[float]:
    """Root's calls, each on a new connection; how long each took (each must be answered)."""
    took = []
    for _ in range(calls):
        start = time.monotonic()
        with Client(daemon.socket, timeout=limit * 4) as client:
            assert client.shadow_sets() == []
        took.append(time.monotonic() - start)
    return took


def _log_size_ok(daemon: Daemon, most_bytes: int = 16 * 1024) -> None:
    text = daemon.log_text()
    assert len(text) < most_bytes, f"the daemon logged {len(text)} bytes:\n{text[:3000]}"
    assert "Traceback" not in text, text


def test_a_user_flooding_the_socket_does_not_keep_root_out(nobody_pythonpath):
    """1,100 half-sent requests from one user, against a daemon started with the 1024 descriptors
    a service gets by default: the user holds a few connections, root is served meanwhile."""
    with running_daemon(public=True, nofile=(1024, 8192)) as daemon:
        flood = subprocess.Popen(
            [
                *AS_NOBODY,
                "env",
                f"PYTHONPATH={nobody_pythonpath}",
                PYTHON,
                "-c",
                FLOOD,
                str(daemon.socket),
                "1100",
            ],
            cwd="/",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert flood.stdout is not None
            seen = json.loads(flood.stdout.readline())
            took = _answered_promptly(daemon)
            assert max(took) < 3.0, took
            head, _, body = seen["extra"].partition("\r\n\r\n")
            assert head.startswith("HTTP/1.1 503 "), seen["extra"]
            refusal = "uid 65534 has 32 connections open, the most a user other than root may have"
            assert json.loads(body)["error"] == refusal
            assert seen["refused"] == f"ShadowvaultError: {refusal}"
            limits = Path(f"/proc/{daemon.process.pid}/limits").read_text()
            assert re.search(r"Max open files\s+8192\s+8192", limits), limits
        finally:
            flood.communicate(input="", timeout=120)
        _answered_promptly(daemon)
        _log_size_ok(daemon)


def test_out_of_descriptors_is_said_once_and_the_daemon_recovers():
    """Descriptors taken away from a running daemon (prlimit), then given back: accept() fails for a
    while, which is one log line, not one per try, and the daemon serves again."""
    with running_daemon() as daemon:
        pid = daemon.process.pid
        _answered_promptly(daemon, calls=1)
        open_now = len(list(Path(f"/proc/{pid}/fd").iterdir()))
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the daemon's too: it inherited ours
        subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={open_now + 4}:{hard}"], check=True)
        held = []
        try:
            for _ in range(40):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(daemon.socket))
                s.sendall(b"GET /v1/vol")
                held.append(s)
            time.sleep(3)  # accept() fails all along
        finally:
            for s in held:
                s.close()
            subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={hard}:{hard}"], check=True)
        took = _answered_promptly(daemon)
        assert max(took) < 3.0, took
        text = daemon.log_text()
        said = [line for line in text.splitlines() if "accept" in line]
        assert said == [
            "shadowvault: error: cannot accept connections: Too many open files;"
            " new ones wait until some close"
        ], text[:3000]
        _log_size_ok(daemon)


def _exchange(daemon: Daemon, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send raw bytes; the status line, the headers and the body of the answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(daemon.socket))
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


def test_what_is_not_http_gets_a_json_error_too():
    with running_daemon() as daemon:
        too_long = "bad request: the request line or a header is longer than 8190 bytes"
        for request, said in (
            (b"GARBAGE\r\n\r\n", "bad request: invalid method encountered"),
            (b"GET /v1/volumes HTTP/1.1\r\nHost: sv\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", too_long),
            (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: sv\r\n\r\n", too_long),
            (
                b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                "bad request: invalid character in Content-Length",
            ),
        ):
            status, headers, body = _exchange(daemon, request)
            assert re.match(r"HTTP/1\.[01] 400 ", status), status
            assert headers["content-type"].startswith("application/json"), headers
            assert json.loads(body) == {"error": said, "kind": "UsageError", "exit_status": 2}
        _answered_promptly(daemon, calls=1)
        _log_size_ok(daemon, most_bytes=2048)


def test_clients_that_hang_up_are_no_internal_error(btrfs, repo, private_dirs, tmp_path):  # noqa: F811
    """A client gone mid-body, and one gone while following a run's events."""
    (btrfs.mount / "docs").mkdir()
    release = _slow_writer(private_dirs, tmp_path)
    with running_daemon() as daemon, Client(daemon.socket) as client:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(daemon.socket))
            s.sendall(b"POST /v1/shadow-sets HTTP/1.1\r\nHost: sv\r\nContent-Length: 100\r\n\r\n{")
            time.sleep(0.5)
        run = client.start_backup(str(repo), [str(btrfs.mount / "docs")], password=PASSWORD)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(daemon.socket))
            s.sendall(f"GET /v1/runs/{run['id']}/events HTTP/1.1\r\nHost: sv\r\n\r\n".encode())
            seen = b""
            while b'"queued"' not in seen:
                seen += s.recv(65536)
        release.touch()
        assert client.wait(run["id"])["state"] == "succeeded"  # the events were written to the gone client
        assert client.shadow_sets() == []
        text = daemon.log_text()
        assert "internal error" not in text and "shadowvault: error" not in text, text
        _log_size_ok(daemon, most_bytes=4096)


def test_following_a_run_outlasts_the_timeout_of_calls(btrfs, repo, private_dirs, tmp_path):  # noqa: F811
    """A run may go quiet for longer than a call may take (a writer freezing, a queue): following
    its events waits for as long as it lasts, and the calls after it have their timeout again."""
    (btrfs.mount / "docs").mkdir()
    release = _slow_writer(private_dirs, tmp_path)
    with running_daemon() as daemon, Client(daemon.socket, timeout=2) as client:
        runs = [
            client.start_backup(str(repo), [str(btrfs.mount / "docs")], password=PASSWORD) for _ in range(3)
        ]
        threading.Timer(6, release.touch).start()  # until then the third waits its turn, without a word
        events = list(client.events(runs[2]["id"]))
        assert [e["message_type"] for e in events[:2]] == ["queued", "started"], events
        assert events[-1]["message_type"] == "summary", events
        assert [client.run(r["id"])["state"] for r in runs] == ["succeeded"] * 3
