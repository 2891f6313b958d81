"""Following a run never hangs on a hung daemon: the events stream says something (a blank line at
least) while a run is silent, and a client that hears nothing for longer gives up in one line."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from shadowvault.client import Client, DaemonNotAnsweringError
from shadowvault.service import run_handlers
from shadowvault.service.peer import Peer
from shadowvault.service.run_handlers import RunApi
from shadowvault.service.runs import Runs


class _Root:
    """The part of the API RunApi asks: every caller is root here."""

    def allow(self, request: web.Request, action: object) -> Peer:
        return Peer(pid=1, uid=0, gid=0)


@contextlib.contextmanager
def _events_server(path: Path, runs: Runs) -> Iterator[None]:
    """The daemon's events route for `runs`, served on `path` from a thread of its own."""
    app = web.Application()
    app.add_routes([web.get("/v1/runs/{id}/events", RunApi(_Root(), runs).run_events)])  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.UnixSite(runner, str(path)).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def test_a_silent_run_is_followed_to_its_end(tmp_path, monkeypatch):
    monkeypatch.setattr(run_handlers, "HEARTBEAT", 0.2)
    runs = Runs()
    quiet = threading.Event()

    def silent_work(run, follow):
        quiet.wait(2.0)  # a run waiting (its turn, a freeze) says nothing
        return {"done": True}, 0

    run = runs.start("backup", 0, "a quiet backup", silent_work)
    with _events_server(tmp_path / "api.sock", runs), Client(tmp_path / "api.sock") as client:
        kinds = [e["message_type"] for e in client.events(run.id, silence=1.0)]
    runs.wait()
    assert kinds == ["queued", "started", "summary"]


def test_a_daemon_that_stops_saying_anything_is_one_error_not_a_hang(tmp_path):
    path = tmp_path / "api.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def wedged_daemon() -> None:  # one event, then nothing: a daemon stopped (SIGSTOP) mid-run
        connection, _ = listener.accept()
        connection.recv(65536)
        line = b'{"message_type": "started", "run_id": "r"}\n'
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
        connection.sendall(head + b"%x\r\n%s\r\n" % (len(line), line))
        time.sleep(5)
        connection.close()

    threading.Thread(target=wedged_daemon, daemon=True).start()
    started = time.monotonic()
    with Client(path) as client:
        events = client.events("r", silence=0.5)
        assert next(events)["message_type"] == "started"
        with pytest.raises(DaemonNotAnsweringError, match=r"stopped answering: nothing for 0\.5 s"):
            next(events)
    assert time.monotonic() - started < 4
    listener.close()
