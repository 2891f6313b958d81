"""VM backups through the monitor of a QEMU without a guest (`-machine none`): exact block accounting,
crash-consistent grading without an agent, whole images from incrementals, cleanup after failures."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.jobs.backup_vm import VmBackupRequest, run_vm_backup
from shadowvault.jobs.restore_vm import VmRestoreRequest, run_vm_restore
from shadowvault.repo.repository import Repository
from shadowvault.shadow import manifest as manifest_doc
from shadowvault.shadow.writers.base import SnapshotContext
from shadowvault.shadow.writers.qemu import QemuWriter
from shadowvault.vm.bitmaps import owner_of_repository
from shadowvault.vm.discovery import find_vm, scan_processes
from shadowvault.vm.qmp import QmpLostError
from tests.fixtures.bare_qemu import BareVM, bare_vm
from tests.fixtures.loopfs import LoopFs
from tests.vm.helpers import PASSWORD, cli, declare, hmp_io, leftovers, new_repository, qmp

CHUNK = 256 * 1024


@pytest.fixture
def vm(private_dirs: Path) -> Iterator[BareVM]:
    with bare_vm() as machine:
        declare(private_dirs / "config", "bare", machine.qmp_socket)
        yield machine


def test_without_a_guest_agent_the_copy_is_crash_consistent_and_graded_so(
    vm: BareVM, repo: Repository
) -> None:
    hmp_io(vm.qmp_socket, "drive0", "write -P 0x11 0 1M")
    result = run_vm_backup(repo, VmBackupRequest(vm="bare"))
    assert result.definition.consistency == "crash"
    assert result.snapshot.consistency == {"vm:bare": "crash"}
    assert result.snapshot.paths == ["vm:bare"]
    assert repo.load_snapshot(result.snapshot_id).manifest is not None
    manifest = manifest_doc.decode(repo.load_blob(result.snapshot.manifest))
    [component] = [c for w in manifest.writers if w.name == "qemu" for c in w.components]
    assert (component.name, component.consistency) == ("bare/drive0", "crash")
    assert "no guest agent" in component.reason
    assert result.definition.argv == vm.argv  # the VM's definition is its command line


def test_a_full_copy_reads_only_data_and_an_incremental_only_the_changed_chunks(
    vm: BareVM, repo: Repository, tmp_path: Path
) -> None:
    size = 64 * 1024 * 1024
    hmp_io(vm.qmp_socket, "drive0", "write -P 0x22 0 2M")
    full = run_vm_backup(repo, VmBackupRequest(vm="bare"))
    stats = full.images["drive0"]
    assert stats.chunks == size // CHUNK
    assert stats.bytes_read == 2 * 1024 * 1024  # the 62 MiB of zeros are not read
    assert stats.zero_chunks == stats.chunks - 8
    assert stats.new_chunks == 2  # 8 identical data chunks and the zero chunk: one blob each

    # three changed places: 4 KiB, 4 KiB and 300 KiB straddling two chunks
    for io in ("write -P 0x33 1M 4k", "write -P 0x44 20M 4k", "write -P 0x55 40M 300k"):
        hmp_io(vm.qmp_socket, "drive0", io)
    incremental = run_vm_backup(repo, VmBackupRequest(vm="bare"))
    stats = incremental.images["drive0"]
    assert incremental.parent == full.snapshot_id
    assert stats.chunks_read == 4 and stats.chunks_reused == stats.chunks - 4
    assert 4096 + 4096 + 300 * 1024 <= stats.bytes_read <= 4 * CHUNK
    assert incremental.definition.disks[0].incremental
    assert incremental.definition.disks[0].copied_bytes == 4 * CHUNK  # what QEMU's job copied

    # the stored image is whole: restored alone (no chain) it is the disk, byte for byte
    restored = run_vm_restore(
        repo,
        VmRestoreRequest(
            snapshot=incremental.snapshot_id, vm="bare", target=str(tmp_path / "r"), format="raw"
        ),
    )
    image = restored.disks["drive0"]
    hmp_io(vm.qmp_socket, "drive0", "flush")  # QEMU's qcow2 metadata reaches the file
    compare = subprocess.run(
        ["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "raw", str(vm.disk), image],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compare.returncode == 0, compare.stdout + compare.stderr
    assert os.stat(image).st_blocks * 512 < 4 * 1024 * 1024  # zero runs restored as holes

    # the older snapshot is intact too, and shares every unchanged chunk with the newer one
    older = run_vm_restore(
        repo,
        VmRestoreRequest(snapshot=full.snapshot_id, vm="bare", target=str(tmp_path / "o"), format="qcow2"),
    )
    with open(restored.disks["drive0"], "rb") as f:
        f.seek(20 * 1024 * 1024)
        assert f.read(4096) == b"\x44" * 4096
    converted = subprocess.run(
        ["qemu-img", "convert", "-O", "raw", older.disks["drive0"], str(tmp_path / "older.raw")], check=True
    )
    assert converted.returncode == 0
    with open(tmp_path / "older.raw", "rb") as f:
        f.seek(20 * 1024 * 1024)
        assert f.read(4096) == bytes(4096)
        f.seek(0)
        assert f.read(4096) == b"\x22" * 4096

    # afterwards QEMU holds exactly one bitmap of ours, the newest, and nothing else
    assert leftovers(vm.qmp_socket) == {
        "jobs": [],
        "nodes": [],
        "bitmaps": [incremental.definition.disks[0].bitmap],
    }


def test_a_lost_monitor_connection_mid_copy_cancels_the_job_and_cleans_up(
    vm: BareVM, private_dirs: Path
) -> None:
    hmp_io(vm.qmp_socket, "drive0", "write -P 0x66 0 16M")
    owner = owner_of_repository("a repository id")
    writer = QemuWriter(
        "bare", spec=find_vm("bare"), copy_speed=1024 * 1024, keeps_copies=True, owner=owner
    )  # 16 s of copying
    ctx = SnapshotContext(set_id="20261128T000000-abcdef", volumes=[])
    writer.prepare_backup(ctx)
    writer.prepare_snapshot(ctx)
    writer.freeze(ctx)
    writer.thaw(ctx)
    assert writer.qmp is not None and writer.qmp._sock is not None
    writer.qmp._sock.shutdown(socket.SHUT_RDWR)  # the connection drops while QEMU copies
    with pytest.raises(QmpLostError):
        writer.post_snapshot(ctx)
    writer.abort(ctx)
    assert leftovers(vm.qmp_socket) == {"jobs": [], "nodes": [], "bitmaps": []}
    assert qmp(vm.qmp_socket, "query-status")["status"] == "running"
    assert not any(Path(writer.work_dir or "/nonexistent").glob("*.qcow2"))


def test_a_requester_killed_mid_copy_leaves_qemu_running_and_the_next_backup_cleans_up(
    vm: BareVM, tmp_path: Path, private_dirs: Path
) -> None:
    new_repository(tmp_path / "repo").close()
    hmp_io(vm.qmp_socket, "drive0", "write -P 0x77 0 16M")
    env = dict(os.environ, SHADOWVAULT_PASSWORD=PASSWORD, SHADOWVAULT_VM_SCAN="0", SHADOWVAULT_NO_DAEMON="1")
    argv = ["-m", "shadowvault.cli.launch", "vm", "backup", "bare", "--repo", str(tmp_path / "repo")]
    requester = subprocess.Popen(
        [sys.executable, *argv, "--copy-speed", "1048576"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: requester.poll() is None and requester.kill())
        deadline = time.monotonic() + 60
        copying = False
        while not copying:  # the copy job is running: the requester waits for it, the guest runs on
            assert requester.poll() is None, requester.stderr.read() if requester.stderr else ""
            assert time.monotonic() < deadline, "the copy job never started"
            with contextlib.suppress(Exception):
                copying = bool(_copies_growing())
            time.sleep(0.2)
        requester.send_signal(signal.SIGKILL)
        requester.wait(timeout=30)
    assert qmp(vm.qmp_socket, "query-status")["status"] == "running"
    left = leftovers(vm.qmp_socket)
    assert left["nodes"] and left["bitmaps"]  # what the dead requester left behind
    done = cli("vm", "backup", "bare", "--json", repo=tmp_path / "repo")
    assert done.returncode == 0, done.stderr
    after = leftovers(vm.qmp_socket)
    assert after["jobs"] == [] and after["nodes"] == [] and len(after["bitmaps"]) == 1
    assert "removed what an earlier backup left" in done.stderr


def _copies_growing() -> list[str]:
    """The copies under way, seen without taking the monitor from the requester: target files growing."""
    return [
        str(p)
        for p in Path(os.environ["SHADOWVAULT_STATE_DIR"], "vm-copies").glob("*/*.qcow2")
        if p.stat().st_size > 1024 * 1024
    ]


@pytest.fixture
def silent_agent(tmp_path: Path) -> Iterator[Path]:
    """A guest agent channel nobody answers on (a guest without qemu-ga): accepts, reads, never replies."""
    path = tmp_path / "qga.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    try:
        yield path
    finally:
        server.close()


def test_an_agent_that_does_not_answer_degrades_to_crash_consistent_with_a_warning(
    vm: BareVM, repo: Repository, private_dirs: Path, silent_agent: Path
) -> None:
    declare(private_dirs / "config", "bare", vm.qmp_socket, silent_agent)
    warnings: list[str] = []
    result = run_vm_backup(repo, VmBackupRequest(vm="bare", agent_timeout=2), on_warning=warnings.append)
    assert result.definition.consistency == "crash"
    assert result.definition.guest_agent == "no answer"
    assert any("guest agent does not answer" in w and "crash-consistent" in w for w in warnings), warnings


def test_an_agent_that_does_not_answer_aborts_by_policy(
    vm: BareVM, tmp_path: Path, private_dirs: Path, silent_agent: Path
) -> None:
    declare(private_dirs / "config", "bare", vm.qmp_socket, silent_agent)
    new_repository(tmp_path / "repo").close()
    done = cli(
        "vm", "backup", "bare", "--on-agent-failure", "abort", "--agent-timeout", "2", repo=tmp_path / "repo"
    )
    assert done.returncode != 0
    assert "guest agent does not answer" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert leftovers(vm.qmp_socket) == {"jobs": [], "nodes": [], "bitmaps": []}


def test_an_unknown_vm_or_disk_is_one_clear_line(vm: BareVM, tmp_path: Path) -> None:
    new_repository(tmp_path / "repo").close()
    done = cli("vm", "backup", "nosuch", repo=tmp_path / "repo")
    assert done.returncode != 0 and "no VM named 'nosuch' (VMs: bare)" in done.stderr
    # refused before any shadow set, in the user's words: no writer, no phase, nothing left in QEMU
    for argv in (["--vm-disk", "vdq"], ["--vm-disk", "drive0", "--vm-disk", "vdq"]):
        done = cli("vm", "backup", "bare", *argv, repo=tmp_path / "repo")
        assert done.returncode == 2, done.stderr
        assert done.stderr == "shadowvault: error: VM bare has no disk vdq (disks: drive0)\n"
        assert done.stdout == ""
    as_json = cli("vm", "backup", "bare", "--vm-disk", "vdq", "--json", repo=tmp_path / "repo")
    assert as_json.returncode == 2 and json.loads(as_json.stderr) == {
        "message_type": "exit_error",
        "code": 2,
        "message": "VM bare has no disk vdq (disks: drive0)",
    }
    assert leftovers(vm.qmp_socket) == {"jobs": [], "nodes": [], "bitmaps": []}
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        assert repo.list_snapshots() == []


def test_a_running_qemu_is_found_from_its_command_line(vm: BareVM) -> None:
    found = [s for s in scan_processes() if s.pid == vm.process.pid]
    assert len(found) == 1
    assert (found[0].name, found[0].qmp, found[0].agent) == ("bare", str(vm.qmp_socket), None)
    assert found[0].argv == vm.argv


def test_the_qemu_writer_is_refused_in_a_shadow_set_of_volumes(vm: BareVM, ext4: LoopFs) -> None:
    done = cli("shadows", "create", "--volume", str(ext4.mount), "--writer", "qemu:bare", "--auto-release")
    assert done.returncode == 2, done.stderr
    assert "shadowvault vm backup bare" in done.stderr and "Traceback" not in done.stderr
    assert leftovers(vm.qmp_socket) == {"jobs": [], "nodes": [], "bitmaps": []}


def test_in_place_restore_waits_for_the_vm_to_stop_and_sets_the_old_image_aside(
    vm: BareVM, tmp_path: Path
) -> None:
    new_repository(tmp_path / "repo").close()
    hmp_io(vm.qmp_socket, "drive0", "write -P 0x5a 0 1M")
    done = cli("vm", "backup", "bare", repo=tmp_path / "repo")
    assert done.returncode == 0, done.stderr
    hmp_io(vm.qmp_socket, "drive0", "write -P 0xa5 0 1M")  # the change the restore must undo
    refused = cli("vm", "restore", "latest", "bare", "--in-place", repo=tmp_path / "repo")
    assert refused.returncode == 2 and "stop VM bare before restoring in place" in refused.stderr
    vm.process.terminate()
    vm.process.wait(timeout=30)
    done = cli("vm", "restore", "latest", "bare", "--in-place", "--json", repo=tmp_path / "repo")
    assert done.returncode == 0, done.stderr
    aside = Path(json.loads(done.stdout)["set_aside"]["drive0"])
    assert aside.name.startswith("disk.qcow2.pre-restore-")
    for image, byte in ((vm.disk, b"\x5a"), (aside, b"\xa5")):
        raw = tmp_path / f"{image.name}.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True, timeout=120)
        assert raw.read_bytes()[:4096] == byte * 4096
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(vm.disk)], capture_output=True, check=True
        ).stdout
    )
    assert info["format"] == "qcow2" and "backing-filename" not in info


def test_a_vm_snapshot_restores_with_the_ordinary_file_restore_too(vm: BareVM, tmp_path: Path) -> None:
    new_repository(tmp_path / "repo").close()
    hmp_io(vm.qmp_socket, "drive0", "write -P 0x3c 8M 1M")
    done = cli("vm", "backup", "bare", "--json", repo=tmp_path / "repo")
    assert done.returncode == 0, done.stderr
    snapshot_id = json.loads(done.stdout)["snapshot_id"]
    restored = cli(
        "restore", f"{snapshot_id}:/vms/bare", "--target", str(tmp_path / "plain"), repo=tmp_path / "repo"
    )
    assert restored.returncode == 0, restored.stderr
    image = tmp_path / "plain" / "drive0.raw"
    definition = json.loads((tmp_path / "plain" / "definition.json").read_text())
    assert definition["name"] == "bare" and definition["disks"][0]["filename"] == str(vm.disk)
    assert image.stat().st_size == 64 * 1024 * 1024 and image.stat().st_blocks * 512 <= 2 * 1024 * 1024
    with open(image, "rb") as f:
        f.seek(8 * 1024 * 1024)
        assert f.read(1024 * 1024) == b"\x3c" * 1024 * 1024


def test_a_vm_declared_in_writers_d_is_listed_backed_up_when_named_and_never_joins_a_set_by_itself(
    vm: BareVM, repo: Repository, private_dirs: Path, ext4: LoopFs
) -> None:
    """A writers.d entry of type qemu names a VM's QMP socket (issue 13): `writers list` shows it as
    qemu:NAME, `vm backup NAME` finds it, and a shadow set of volumes never picks it up on its own."""
    (private_dirs / "config" / "writers.d" / "declared.toml").write_text(
        f'name = "declared"\ntype = "qemu"\nqmp = "{vm.qmp_socket}"\n'
    )
    done = cli("writers", "list", "--json")
    assert done.returncode == 0, done.stderr
    entries = [e for e in json.loads(done.stdout) if e["writer"] == "qemu:declared"]
    assert [e["kind"] for e in entries] == ["discovered"] and entries[0]["state"] == "stable", entries
    result = run_vm_backup(repo, VmBackupRequest(vm="declared"))
    assert result.images["drive0"].chunks > 0
    shadows = cli("shadows", "create", "--volume", str(ext4.mount), "--auto-release", "--json")
    assert shadows.returncode == 0, shadows.stderr
    assert "qemu" not in shadows.stdout  # joins only when named
