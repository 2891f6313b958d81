"""Requests the daemon must refuse as the caller's mistake: a 4xx with one JSON line, never a 500."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path

from tests.service.daemon import running_daemon


def _call(daemon_socket: Path, method: str, path: str, body: bytes = b"") -> tuple[int, dict]:
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


def test_a_job_with_a_bad_name_or_no_definition_is_the_caller_s_mistake(private_dirs):
    with running_daemon() as daemon:
        status, error = _call(daemon.socket, "POST", "/v1/jobs/..%2Fetc%2Fpasswd/runs")
        assert status == 400 and error["error"].startswith("invalid job name '../etc/passwd'")
        assert error["exit_status"] == 2
        status, error = _call(daemon.socket, "POST", "/v1/jobs/nightly/runs")
        assert status == 404 and error["error"].startswith("no job 'nightly': ")
        assert error["exit_status"] == 2
        assert "Traceback" not in daemon.log_text()
