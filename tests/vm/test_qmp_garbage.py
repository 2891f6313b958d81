"""A QMP monitor that answers garbage or hangs up mid-answer: a clear error and a closed connection.

A monitor socket can be anything that listens at the path a vms.d file or a command line names
(another program, a QEMU of a different build, a half-dead one). What it sends is untrusted: a line
that is not JSON, JSON that is not a QMP message, an error that is not an object, a reply cut off by
the connection closing. Each must end the conversation as a lost connection (QmpLostError, which the
writer turns into a failed event and its cleanup), never an internal error; and the point-in-time
transaction failing that way fails the writer's freeze with a WriterError, as a QMP error does.
A socket of our own plays the monitor: no QEMU answers garbage on purpose.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.errors import WriterError
from shadowvault.shadow.writers.qemu import QemuWriter
from shadowvault.vm.copy_jobs import DiskCopy
from shadowvault.vm.discovery import VmSpec
from shadowvault.vm.disks import DiskInfo
from shadowvault.vm.qmp import QmpClient, QmpLostError

GREETING = b'{"QMP": {"version": {}, "capabilities": []}}\n'


def fake_monitor(path: Path, answer: bytes) -> Iterator[threading.Thread]:
    """A monitor that greets, accepts qmp_capabilities, then sends `answer` to the next command and
    closes the connection."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(GREETING)
            ident = json.loads(lines.readline())["id"]
            conn.sendall(json.dumps({"return": {}, "id": ident}).encode() + b"\n")
            lines.readline()
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        server.close()
        thread.join(timeout=10)


ANSWERS = [
    b"this is not json\n",
    b"[1, 2, 3]\n",
    b'"a string"\n',
    b'{"error": "boom", "id": "sv-2"}\n',
    b'{"event": 5, "data": {}}\n',
    b'{"event": "BLOCK_JOB_COMPLETED", "data": "x"}\n',
    b'{"return": {"status": "runn',  # cut off: the connection closes mid-answer
]


@pytest.mark.parametrize("answer", ANSWERS)
def test_garbage_from_the_monitor_is_a_lost_connection(tmp_path: Path, answer: bytes) -> None:
    path = tmp_path / "qmp.sock"
    for _ in fake_monitor(path, answer):
        client = QmpClient(str(path), timeout=5).connect()
        with pytest.raises(QmpLostError, match="QEMU monitor"):
            client.execute("query-status")
        assert not client.connected


def test_the_freeze_fails_as_a_writer_error_when_the_transaction_answer_is_garbage(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    disk = DiskInfo(name="vda", node="vda", format="qcow2", filename="/x.qcow2", virtual_size=1 << 20)
    copy = DiskCopy(
        disk=disk, target=str(tmp_path / "t.qcow2"), node="sv-tgt-x", job="sv-job-x", new_bitmap="b"
    )
    for _ in fake_monitor(path, b"\x00\xff garbage\n"):
        writer = QemuWriter("web", spec=VmSpec(name="web", qmp=str(path)), keeps_copies=True, owner="o")
        writer.copies = [copy]
        with pytest.raises(WriterError, match="the point-in-time transaction failed: QEMU monitor"):
            writer.freeze(None)  # type: ignore[arg-type]  # no agent: the context is not used
        assert writer.qmp is not None and not writer.qmp.connected
