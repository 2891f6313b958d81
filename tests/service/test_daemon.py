"""The daemon as requesters see it: a real `shadowvault daemon` on a real socket, real btrfs sets."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shadowvault.client import Client
from shadowvault.errors import NotFoundError, ShadowvaultError, UsageError
from shadowvault.service.settings import WORKER_THREADS
from shadowvault.shadow.store import ShadowStore
from tests.fixtures.unprivileged import run_as_nobody
from tests.service.daemon import raw_call, running_daemon

PROJECT = Path(__file__).resolve().parents[2]


def _requester(daemon_socket: Path, volume: Path, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.service.requester", str(daemon_socket), str(volume), *flags],
        cwd=PROJECT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _wait_until_gone(client: Client, set_id: str, limit: float = 60.0) -> None:
    """Wait for the daemon to release a set (a condition with a generous limit, not a timing)."""
    deadline = time.monotonic() + limit
    while any(s["id"] == set_id for s in client.shadow_sets()):
        assert time.monotonic() < deadline, f"shadow set {set_id} was not released"
        time.sleep(0.1)


def test_lists_volumes_and_writers(btrfs):
    with running_daemon() as daemon, Client(daemon.socket) as client:
        volumes = {v["mount_point"]: v for v in client.volumes()}
        assert volumes[str(btrfs.mount)]["fstype"] == "btrfs"
        providers = volumes[str(btrfs.mount)]["providers"]
        assert providers[0] == "btrfs" and "reflink" in providers and providers[-1] == "live", providers
        writers = {w["writer"]: w for w in client.writers()}
        assert writers["fsfreeze"]["kind"] == "builtin"
        assert client.shadow_sets() == []


def test_create_list_get_delete_a_set_on_btrfs(btrfs):
    (btrfs.mount / "data.txt").write_text("before\n")
    with running_daemon() as daemon, Client(daemon.socket) as client:
        manifest = client.create_shadow_set([str(btrfs.mount)], provider="btrfs", persistent=True)
        assert manifest["state"] == "created" and manifest["persistent"] is True
        (shadow,) = manifest["shadows"]
        snapshot = Path(shadow["path"])
        (btrfs.mount / "data.txt").write_text("after\n")
        assert (snapshot / "data.txt").read_text() == "before\n"
        assert [s["id"] for s in client.shadow_sets()] == [manifest["id"]]
        assert client.shadow_set(manifest["id"][:12])["id"] == manifest["id"]

        assert client.delete_shadow_set(manifest["id"]) == manifest["id"]
        assert not snapshot.exists()
        assert client.shadow_sets() == []
        with pytest.raises(NotFoundError, match="no shadow set"):
            client.delete_shadow_set(manifest["id"])


def test_a_killed_requester_s_set_is_released(btrfs):
    with running_daemon() as daemon, Client(daemon.socket) as watcher:
        requester = _requester(daemon.socket, btrfs.mount)
        try:
            assert requester.stdout is not None
            manifest = json.loads(requester.stdout.readline())
            snapshot = Path(manifest["shadows"][0]["path"])
            assert snapshot.is_dir() and manifest["persistent"] is False
            assert [s["id"] for s in watcher.shadow_sets()] == [manifest["id"]]
            requester.send_signal(signal.SIGKILL)
            requester.wait()
        finally:
            if requester.poll() is None:
                requester.kill()
                requester.wait()
        _wait_until_gone(watcher, manifest["id"])
        assert not snapshot.exists()


def test_a_persistent_set_outlives_its_requester(btrfs):
    with running_daemon() as daemon, Client(daemon.socket) as client:
        requester = _requester(daemon.socket, btrfs.mount, "--persistent", "--exit")
        out, _ = requester.communicate(timeout=120)
        manifest = json.loads(out)
        assert requester.returncode == 0
        # the requester's connection is gone; the set stays until deleted
        assert [s["id"] for s in client.shadow_sets()] == [manifest["id"]]
        assert Path(manifest["shadows"][0]["path"]).is_dir()
        client.delete_shadow_set(manifest["id"])


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o700)
    return path


def test_requesters_at_once_on_one_volume_are_serialized(btrfs, cli, private_dirs, tmp_path):
    """Two API clients and an in-process CLI run ask for a set of one volume at the same moment.

    A writers.d script writer takes part in every set: its freeze fails if another set is frozen
    (mkdir of one marker directory), and it holds its freeze a moment, so overlapping sets would meet.
    """
    marker = tmp_path / "frozen"
    freeze = _script(tmp_path / "freeze.sh", f"mkdir {marker} || exit 1\nsleep 0.5")
    thaw = _script(tmp_path / "thaw.sh", f"rmdir {marker}")
    config = private_dirs / "config" / "writers.d" / "one-at-a-time.toml"
    config.write_text(f'freeze = ["{freeze}"]\nthaw = ["{thaw}"]\n')
    config.chmod(0o600)
    with running_daemon() as daemon, Client(daemon.socket) as client:
        requesters = [_requester(daemon.socket, btrfs.mount, "--exit") for _ in range(2)]
        in_process = cli("shadows", "create", "--volume", btrfs.mount, "--json")
        outputs = [r.communicate(timeout=120)[0] for r in requesters]
        assert [r.returncode for r in requesters] == [0, 0], outputs
        assert in_process.returncode == 0, in_process.stderr
        manifests = [json.loads(out) for out in outputs] + [json.loads(in_process.stdout)]
        assert all(m["state"] == "created" for m in manifests)
        # the requesters' sets wait for their backup to complete; the persistent CLI set does not
        expected = ["waiting_for_backup_complete", "waiting_for_backup_complete", "stable"]
        for m, state in zip(manifests, expected, strict=True):
            writer = next(w for w in m["writers"] if w["name"] == "script")
            assert writer["state"] == state and writer["failure"] is None, writer
        windows = sorted((m["frozen_at"], m["frozen_at"] + m["freeze_window"]) for m in manifests)
        for (_, first_end), (second_start, _) in itertools.pairwise(windows):
            assert first_end <= second_start, f"freeze windows overlap: {windows}"
        cli_set = manifests[-1]["id"]
        client.delete_shadow_set(cli_set)
        for m in manifests[:2]:
            _wait_until_gone(client, m["id"])
        assert client.shadow_sets() == []


def test_a_user_who_is_not_root_is_refused(btrfs, nobody_pythonpath):
    with running_daemon(public=True) as daemon:
        script = (
            "import sys\n"
            "from shadowvault.client import Client\n"
            "from shadowvault.errors import PermissionDeniedError\n"
            "try:\n"
            f"    Client({str(daemon.socket)!r}).create_shadow_set([{str(btrfs.mount)!r}])\n"
            "except PermissionDeniedError as err:\n"
            "    print(err)\n"
            "    sys.exit(3)\n"
        )
        refused = run_as_nobody(nobody_pythonpath, "-c", script)
        assert refused.returncode == 3, refused.stderr
        assert (
            refused.stdout.strip() == "uid 65534 may not create a shadow set: the shadowvault API is root's"
            " and the shadowvault group's"
        )
        raw = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "curl",
                "-s",
                "-w",
                "\\n%{http_code}",
                "--unix-socket",
                str(daemon.socket),
                "http://sv/v1/shadow-sets",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        body, status = raw.stdout.rsplit("\n", 1)
        assert status == "403"
        assert (
            json.loads(body)["error"]
            == "uid 65534 may not list shadow sets: the shadowvault API is root's and the shadowvault group's"
        )
        with Client(daemon.socket) as root:
            assert root.shadow_sets() == []  # nothing was made


def test_malformed_and_oversized_requests_get_a_json_error_and_the_daemon_goes_on(btrfs):
    with running_daemon() as daemon:
        status, error = raw_call(daemon.socket, "POST", "/v1/shadow-sets", b'{"volumes": [')
        assert status == 400 and error["error"].startswith("malformed JSON: ")
        assert "\n" not in error["error"] and "Traceback" not in error["error"]
        status, error = raw_call(daemon.socket, "POST", "/v1/shadow-sets", b'{"volumes": "/x"}')
        assert status == 400 and error["error"].startswith("invalid request: Expected `array`")
        status, error = raw_call(daemon.socket, "POST", "/v1/shadow-sets", b" " * (1 << 20))
        assert status == 413 and error["error"] == "the request body is larger than 65536 bytes"
        status, error = raw_call(daemon.socket, "GET", "/v1/nothing-here", b"")
        assert status == 404 and error["error"] == "no such call: GET /v1/nothing-here"
        with Client(daemon.socket) as client:
            with pytest.raises(UsageError, match="name at least one volume"):
                client.create_shadow_set([])
            assert str(btrfs.mount) in {v["mount_point"] for v in client.volumes()}
        assert "Traceback" not in daemon.log_text()


def test_sigterm_stops_the_daemon_and_releases_its_sets(btrfs):
    with running_daemon() as daemon:
        client = Client(daemon.socket)
        held = client.create_shadow_set([str(btrfs.mount)])
        kept = client.create_shadow_set([str(btrfs.mount)], persistent=True)
        held_path, kept_path = (Path(m["shadows"][0]["path"]) for m in (held, kept))
        assert held_path.is_dir() and kept_path.is_dir()
        assert daemon.stop() == 0, daemon.log_text()
        assert daemon.next_notice() == "STOPPING=1"
        assert not held_path.exists()
        assert kept_path.is_dir()
        assert [m.id for m in ShadowStore().list()] == [kept["id"]]
        assert not daemon.socket.exists()
        client.close()
        ShadowStore().release(kept["id"])
        assert not kept_path.exists()
        assert os.environ["SHADOWVAULT_STATE_DIR"]  # the daemon used the test's private state


def test_a_restarted_daemon_keeps_persistent_sets_and_releases_a_killed_one_s(btrfs):
    """SIGKILL leaves no chance to clean up: the next daemon releases the killed one's own sets."""
    with running_daemon() as first:
        client = Client(first.socket)
        held = client.create_shadow_set([str(btrfs.mount)])
        kept = client.create_shadow_set([str(btrfs.mount)], persistent=True)
        first.process.kill()
        first.process.wait()
        client.close()
    held_path, kept_path = (Path(m["shadows"][0]["path"]) for m in (held, kept))
    assert held_path.is_dir()  # nobody released it yet
    with running_daemon() as second, Client(second.socket) as client:
        assert [s["id"] for s in client.shadow_sets()] == [kept["id"]]
        assert not held_path.exists() and kept_path.is_dir()
        client.delete_shadow_set(kept["id"])


def test_a_slow_client_gets_408_and_blocks_nobody(btrfs):
    with running_daemon("--read-timeout", "1", "--header-timeout", "1") as daemon:
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            slow.connect(str(daemon.socket))
            slow.sendall(b"POST /v1/shadow-sets HTTP/1.1\r\nHost: sv\r\nContent-Length: 100\r\n\r\n{")
            stalled.connect(str(daemon.socket))
            stalled.sendall(b"GET /v1/volu")  # never ends its request line
            with Client(daemon.socket) as client:  # served meanwhile
                assert str(btrfs.mount) in {v["mount_point"] for v in client.volumes()}
            for sock, error in (
                (slow, "the request body did not arrive within 1 s"),
                (stalled, "the request headers did not arrive within 1 s"),
            ):
                sock.settimeout(60)
                head, _, body = _read_all(sock).partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 408 "), head
                assert json.loads(body)["error"] == error
            assert _read_all(stalled) == b""  # and closed
        finally:
            slow.close()
            stalled.close()
        with Client(daemon.socket) as client:
            assert client.shadow_sets() == []


def _read_all(sock: socket.socket) -> bytes:
    """Everything the daemon sends until it closes the connection (or one full JSON answer)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            None,
        )
        if sep and length is not None and len(body) >= length:
            return data


def _usage(pid: int) -> tuple[int, int, int]:
    """The daemon's open descriptors, threads and resident KiB."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = len(os.listdir(f"/proc/{pid}/task"))
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    return fds, threads, rss


def _calls(daemon_socket: Path, count: int) -> None:
    """`count` calls: half on one kept connection, half each on a connection of its own, some failing."""
    with Client(daemon_socket) as kept:
        for i in range(count // 2):
            assert kept.shadow_sets() == []
            with Client(daemon_socket) as once:
                if i % 2:
                    with pytest.raises(NotFoundError):
                        once.shadow_set("nothing")
                else:
                    assert once.shadow_sets() == []


def test_a_thousand_calls_leave_no_descriptor_thread_or_memory_behind():
    with running_daemon() as daemon:
        pid = daemon.process.pid
        _calls(daemon.socket, 200)  # warm up: the worker threads and caches exist from here on
        fds, _, rss = _usage(pid)
        _calls(daemon.socket, 1000)
        deadline = time.monotonic() + 30
        while _usage(pid)[0] > fds and time.monotonic() < deadline:
            time.sleep(0.1)  # the daemon closes its side of the last connections
        after_fds, after_threads, after_rss = _usage(pid)
        assert after_fds <= fds
        assert after_threads <= 1 + WORKER_THREADS  # the main thread and the bounded pool, however busy
        assert after_rss - rss < 8 * 1024, f"RSS grew from {rss} to {after_rss} KiB"


def test_a_connection_holding_a_set_is_never_closed_for_being_idle(btrfs):
    with running_daemon("--idle-timeout", "1") as daemon, Client(daemon.socket) as watcher:
        requester = _requester(daemon.socket, btrfs.mount)
        try:
            assert requester.stdout is not None
            manifest = json.loads(requester.stdout.readline())
            for _ in range(2):  # two idle periods: an idle connection without a set is closed in each
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
                    silent.connect(str(daemon.socket))
                    silent.settimeout(60)
                    assert silent.recv(1) == b""
            assert [s["id"] for s in watcher.shadow_sets()] == [manifest["id"]]
            assert Path(manifest["shadows"][0]["path"]).is_dir()
            assert requester.poll() is None
            requester.communicate(input="", timeout=60)  # the requester ends: its set goes
            assert requester.returncode == 0
        finally:
            if requester.poll() is None:
                requester.kill()
                requester.wait()
        _wait_until_gone(watcher, manifest["id"])
        assert not Path(manifest["shadows"][0]["path"]).exists()


def test_a_client_idle_past_the_timeout_carries_on_with_a_new_connection():
    with running_daemon("--idle-timeout", "1") as daemon, Client(daemon.socket) as client:
        assert client.shadow_sets() == []
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:  # connected after the client's call
            silent.connect(str(daemon.socket))
            silent.settimeout(60)
            assert silent.recv(1) == b""  # so the client's connection has been closed too
        assert client.shadow_sets() == []
        with pytest.raises(NotFoundError, match="no shadow set nothing"):
            client.shadow_set("nothing")


def test_a_second_daemon_on_the_same_socket_is_refused_and_the_first_serves_on(cli):
    with running_daemon() as daemon:
        second = cli("daemon", "--socket", str(daemon.socket), timeout=120)
        assert second.returncode == 1
        assert (
            second.stderr.strip().splitlines()[-1]
            == f"shadowvault: error: a daemon is already listening on {daemon.socket}"
        )
        assert "Traceback" not in second.stderr
        with Client(daemon.socket) as client:
            assert client.shadow_sets() == []


def test_a_set_of_a_path_that_is_no_volume_fails_with_the_reason(tmp_path):
    with running_daemon() as daemon, Client(daemon.socket) as client:
        with pytest.raises(ShadowvaultError) as refused:
            client.create_shadow_set([str(tmp_path / "missing")])
        assert str(tmp_path / "missing") in str(refused.value)
        assert "\n" not in str(refused.value)
        assert client.shadow_sets() == []
