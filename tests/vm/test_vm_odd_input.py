"""Odd input to the VM commands is one line and the right exit code, never an internal error.

A damaged libvirt domain XML in a snapshot, a monitor answering valid JSON of the wrong shape, a VM
whose name holds a `/`: each is run through the CLI as a user would.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from pathlib import Path

import msgspec
import pytest

from shadowvault.repo.format import BlobType
from shadowvault.repo.snapshot import Snapshot
from shadowvault.vm import layout
from tests.vm.helpers import cli, declare, new_repository
from tests.vm.test_hostile_vm_snapshots import craft, one_line_error
from tests.vm.unix_server import serving

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


def _monitor(path: Path, status: object) -> contextlib.AbstractContextManager[None]:
    """A monitor that greets and answers query-status with `status` (anything else: {})."""

    def talk(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\n')
            for line in lines:
                request = json.loads(line)
                answer = status if request["execute"] == "query-status" else {}
                conn.sendall(json.dumps({"return": answer, "id": request["id"]}).encode() + b"\n")

    return serving(path, talk)


@pytest.mark.parametrize("status", [["running"], "running", 5])
def test_a_monitor_answering_the_wrong_shape_is_one_line(
    tmp_path: Path, private_dirs: Path, status: object
) -> None:
    qmp = tmp_path / "qmp.sock"
    declare(private_dirs / "config", "web", qmp)
    new_repository(tmp_path / "repo").close()
    with _monitor(qmp, status):
        done = cli("vm", "backup", "web", repo=tmp_path / "repo", timeout=120)
        one_line_error(done, 1, "query-status answered")
