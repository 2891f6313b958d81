"""The daemon's socket file: a stale one is replaced, anything else at the path is left alone, and a
stopping daemon removes its own socket file only, never the one a newer daemon bound there."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from shadowvault.client import Client, DaemonUnavailableError
from shadowvault.errors import ShadowvaultError
from shadowvault.service.server import bind_socket
from tests.service.daemon import running_daemon


def test_a_stale_socket_file_is_replaced(tmp_path):
    path = tmp_path / "api.sock"
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(path))  # bound, never listening: what a killed daemon leaves refuses connections
    left.close()
    bind_socket(path).close()
    assert path.is_socket()


def test_a_file_that_is_not_a_socket_is_never_deleted(tmp_path, cli):
    precious = tmp_path / "notes.txt"
    precious.write_text("not a socket\n")
    with pytest.raises(ShadowvaultError, match="exists and is not a socket"):
        bind_socket(precious)
    assert precious.read_text() == "not a socket\n"
    done = cli("daemon", "--socket", str(precious), timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"shadowvault: error: cannot use the socket {precious}: it exists and is not a socket"
    )
    assert precious.read_text() == "not a socket\n"


def test_a_stopping_daemon_leaves_the_socket_a_newer_daemon_bound(tmp_path):
    with running_daemon() as first:
        path: Path = first.socket
        path.unlink()  # removed under it (a cleanup of /run): a second daemon may then bind the path
        with running_daemon("--socket", str(path)) as second:
            assert first.stop() == 0
            assert path.is_socket()
            with Client(path) as client:
                assert client.shadow_sets() == []
            assert second.process.poll() is None


def test_a_daemon_gone_between_two_calls_is_said_so():
    with running_daemon() as daemon, Client(daemon.socket) as client:
        assert client.shadow_sets() == []
        assert daemon.stop() == 0
        with pytest.raises(DaemonUnavailableError, match=r"^the shadowvault daemon on .* went away$"):
            client.shadow_sets()


def test_a_socket_path_that_cannot_be_is_one_line_saying_why(tmp_path):
    (tmp_path / "file").write_text("")
    cases = [
        (
            tmp_path / "file" / "api.sock",
            f"cannot make the socket's directory {tmp_path / 'file'}: File exists",
        ),
        (tmp_path / ("x" * 120) / "api.sock", "AF_UNIX path too long"),
    ]
    for path, message in cases:
        with pytest.raises(ShadowvaultError) as refused:
            bind_socket(path)
        assert message in str(refused.value) and "None" not in str(refused.value)
