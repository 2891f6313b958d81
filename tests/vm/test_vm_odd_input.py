"""Odd input to the VM commands is one line and the right exit code, never an internal error.

A damaged libvirt domain XML in a snapshot, a monitor answering valid JSON of the wrong shape, a VM
whose name holds a `/`: each is run through the CLI as a user would.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from shadowvault.repo.format import BlobType
from shadowvault.repo.snapshot import Snapshot
from shadowvault.vm import layout
from tests.vm.helpers import cli, declare, new_repository
from tests.vm.test_hostile_vm_snapshots import craft, one_line_error

ONE = (4096, 4096, [b"\x01" * 4096])


def test_a_damaged_libvirt_xml_is_refused_before_writing(tmp_path: Path) -> None:
    repo = new_repository(tmp_path / "repo")
    try:
        disk = layout.StoredDisk(
            disk="vda",
            format="raw",
            filename="/nonexistent/0.raw",
            node="n0",
            virtual_size=4096,
            chunk_size=4096,
        )
        definition = layout.VmDefinition(
            name="web", argv=["qemu-system-x86_64"], disks=[disk], libvirt_xml="<domain><name>web</nam"
        )
        images = {"vda": [repo.save_blob(BlobType.DATA, b"\x01" * 4096)]}
        tree = layout.vm_tree(repo.save_blob, repo.save_tree, definition, images)
        repo.save_snapshot(
            Snapshot(time=time.time(), host=socket.gethostname(), paths=["vm:web"], tags=["vm"], tree=tree)
        )
        repo.flush()
    finally:
        repo.close()
    target = tmp_path / "target"
    done = cli("vm", "restore", "latest", "web", "--target", str(target), repo=tmp_path / "repo")
    one_line_error(done, 1, "libvirt domain XML is damaged")
    assert not target.exists()


def test_a_vm_whose_name_holds_a_slash_is_restored(tmp_path: Path) -> None:
    repo = new_repository(tmp_path / "repo")
    try:
        craft(repo, ["qemu-system-x86_64", "-hda", "/nonexistent/0.raw"], {"vda": ONE}, vm="web/01")
    finally:
        repo.close()
    target = tmp_path / "target"
    done = cli(
        "vm",
        "restore",
        "latest",
        "web/01",
        "--target",
        str(target),
        "--format",
        "raw",
        repo=tmp_path / "repo",
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in target.iterdir()) == ["vda.raw", "web_01.json", "web_01.sh"]
    assert msgspec.json.decode((target / "web_01.json").read_bytes())["name"] == "web/01"


def _monitor(path: Path, status: object) -> Iterator[None]:
    """A monitor that greets and answers query-status with `status` (anything else: {})."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn, conn.makefile("rb") as lines:
                conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\n')
                for line in lines:
                    request = json.loads(line)
                    answer = status if request["execute"] == "query-status" else {}
                    conn.sendall(json.dumps({"return": answer, "id": request["id"]}).encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        server.close()


@pytest.mark.parametrize("status", [["running"], "running", 5])
def test_a_monitor_answering_the_wrong_shape_is_one_line(
    tmp_path: Path, private_dirs: Path, status: object
) -> None:
    qmp = tmp_path / "qmp.sock"
    declare(private_dirs / "config", "web", qmp)
    new_repository(tmp_path / "repo").close()
    for _ in _monitor(qmp, status):
        done = cli("vm", "backup", "web", repo=tmp_path / "repo", timeout=120)
        one_line_error(done, 1, "query-status answered")
