"""Crafted entries inside well-shaped QMP answers: a lost connection, never an internal error.

qmp.py guards the top-level shape of an answer (test_qmp_garbage.py); what is inside (a block job
whose device is a number, a node's dirty bitmaps given as a string, a bitmap's name as a list, a
finished job's byte count as text) reached code that read it as QEMU sends it, and failed with an
AttributeError, TypeError or KeyError. Each must end the conversation as a lost connection
(QmpLostError, the monitor closed), and `vm backup` must say so in one line, exit 1.
A socket of our own plays the monitor, answering each command as scripted.
"""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from shadowvault.vm import copy_jobs
from shadowvault.vm.copy_jobs import DiskCopy
from shadowvault.vm.disks import DiskBase, DiskInfo, list_disks, usable_base
from shadowvault.vm.qmp import QmpClient, QmpLostError
from tests.vm.helpers import cli, declare, new_repository
from tests.vm.unix_server import serving

GREETING = b'{"QMP": {"version": {}, "capabilities": []}}\n'
DISK = DiskInfo(name="vda", node="vda", format="qcow2", filename="/x.qcow2", virtual_size=1 << 20)
SANE: dict[str, Any] = {
    "query-status": {"status": "running"},
    "query-block-jobs": [],
    "query-named-block-nodes": [{"node-name": "vda", "dirty-bitmaps": []}],
    "query-block": [
        {
            "device": "vda",
            "inserted": {
                "node-name": "vda",
                "drv": "qcow2",
                "image": {"filename": "/x.qcow2", "virtual-size": 1 << 20},
            },
        }
    ],
}


def scripted_monitor(
    path: Path, answers: dict[str, Any], events: list[dict[str, Any]] = ()
) -> contextlib.AbstractContextManager[None]:  # type: ignore[assignment]
    """A monitor answering each command with `answers[command]` ({} for others), on every connection;
    `events` are sent once capabilities are negotiated."""

    def talk(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            conn.sendall(GREETING)
            for line in lines:
                request = json.loads(line)
                reply = {"return": answers.get(request["execute"], {}), "id": request.get("id")}
                conn.sendall(json.dumps(reply).encode() + b"\n")
                if request["execute"] == "qmp_capabilities":
                    for event in events:
                        conn.sendall(json.dumps(event).encode() + b"\n")

    return serving(path, talk)


CRAFTED_NODES = [
    [{"node-name": ["vda"]}],
    [{"node-name": "vda", "dirty-bitmaps": "sv-bitmap"}],
    [{"node-name": "vda", "dirty-bitmaps": None}],
    [{"node-name": "vda", "dirty-bitmaps": [5]}],
    [{"node-name": "vda", "dirty-bitmaps": [{"name": ["sv-a"], "persistent": True}]}],
    [{"node-name": "vda", "dirty-bitmaps": [{"name": "sv-a", "inconsistent": "no"}]}],
]


@pytest.mark.parametrize("nodes", CRAFTED_NODES)
def test_crafted_nodes_or_bitmaps_are_a_lost_connection(tmp_path: Path, nodes: list[Any]) -> None:
    path = tmp_path / "qmp.sock"
    with scripted_monitor(path, SANE | {"query-named-block-nodes": nodes}):
        for read in (
            lambda qmp: copy_jobs.clean_leftovers(qmp, "0123abcd", set()),
            lambda qmp: usable_base(
                qmp, DISK, DiskBase(bitmap="sv-a", virtual_size=1 << 20, chunk_size=1 << 18)
            ),
            list_disks,
        ):
            qmp = QmpClient(str(path), timeout=5).connect()
            with pytest.raises(QmpLostError, match=r"QEMU monitor .* not described as QEMU does"):
                read(qmp)
            assert not qmp.connected


@pytest.mark.parametrize("jobs", [[{"device": 5}], [{"device": None}], [{"device": {"id": "sv-job-x"}}]])
def test_crafted_block_jobs_are_a_lost_connection(tmp_path: Path, jobs: list[Any]) -> None:
    path = tmp_path / "qmp.sock"
    with scripted_monitor(path, SANE | {"query-block-jobs": jobs}):
        qmp = QmpClient(str(path), timeout=5).connect()
        with pytest.raises(QmpLostError, match=r"a block job .* not described as QEMU does"):
            copy_jobs.clean_leftovers(qmp, "0123abcd", set())
        assert not qmp.connected


def _copy(tmp_path: Path) -> DiskCopy:
    return DiskCopy(
        disk=DISK, target=str(tmp_path / "t.qcow2"), node="sv-tgt-x", job="sv-job-x", new_bitmap="b"
    )


@pytest.mark.parametrize(
    "data",
    [
        {"device": "sv-job-x", "offset": "all of it", "len": 1 << 20},
        {"device": "sv-job-x", "offset": 1 << 20, "len": [1]},
        {"device": "sv-job-x", "offset": 1 << 20, "error": {"desc": "x"}},
    ],
)
def test_a_crafted_end_of_a_copy_job_is_a_lost_connection(tmp_path: Path, data: dict[str, Any]) -> None:
    path = tmp_path / "qmp.sock"
    events = [
        {"event": "BLOCK_JOB_COMPLETED", "data": {"device": ["sv-job-x"]}},  # no job of ours: ignored
        {"event": "BLOCK_JOB_COMPLETED", "data": data},
    ]
    with scripted_monitor(path, SANE, events):
        qmp = QmpClient(str(path), timeout=5).connect()
        with pytest.raises(
            QmpLostError, match="the end of block job 'sv-job-x' is not described as QEMU does"
        ):
            copy_jobs.wait_copies(qmp, [_copy(tmp_path)], timeout=5)
        assert not qmp.connected


def test_a_well_formed_end_of_a_copy_job_still_completes_it(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    events = [
        {"event": "BLOCK_JOB_COMPLETED", "data": {"device": ["sv-job-x"]}},
        {"event": "BLOCK_JOB_COMPLETED", "data": {"device": "sv-job-x", "offset": 1 << 20, "len": 1 << 20}},
    ]
    with scripted_monitor(path, SANE, events):
        copy = _copy(tmp_path)
        with QmpClient(str(path), timeout=5) as qmp:
            copy_jobs.wait_copies(qmp, [copy], timeout=5)
        assert copy.describe()["copied_bytes"] == 1 << 20


def test_vm_backup_says_so_in_one_line(tmp_path: Path, private_dirs: Path) -> None:
    path = tmp_path / "qmp.sock"
    declare(private_dirs / "config", "web", path)
    new_repository(tmp_path / "repo").close()
    with scripted_monitor(path, SANE | {"query-block-jobs": [{"device": 5}]}):
        done = cli("vm", "backup", "web", repo=tmp_path / "repo", timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "a block job (device: int) is not described as QEMU does" in done.stderr, done.stderr
    assert "qemu:web" in done.stderr
