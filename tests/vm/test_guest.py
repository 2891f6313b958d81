"""A running guest backed up through its hypervisor while it writes: the tiny guest (tiny_vm.py)
appends numbered records with fsync and acknowledges each on its console. Every backup is restored;
its filesystem must pass `e2fsck -fn`, hold every record acknowledged before the backup began, and
boot: all ten are mounted by the guest's kernel in one boot (check_boot.py), the last also boots
from its restored definition with --verify-boot."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from shadowvault.cli.main import cli as main_cli
from shadowvault.jobs.backup_vm import VmBackupRequest, run_vm_backup
from shadowvault.jobs.restore_vm import VmRestoreRequest, run_vm_restore
from shadowvault.vm.agent import AgentError, GuestAgent
from shadowvault.vm.discovery import find_vm
from shadowvault.vm.libvirt import ROOT_ENV
from tests.fixtures.tiny_vm import READY_MARKER, RECORD_SIZE, TinyVM, tiny_vm
from tests.vm.check_boot import boot_reading
from tests.vm.helpers import (
    PASSWORD,
    assert_acknowledged_records,
    cli,
    declare,
    leftovers,
    new_repository,
    qmp,
    records_in,
)

# a TCG boot, ten backups, a second boot
pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900)]

BACKUPS = 10
CHUNK = 256 * 1024
DISK_CHUNKS = 64 * 1024 * 1024 // CHUNK


@pytest.fixture(scope="module")
def guest() -> Iterator[TinyVM]:
    with tiny_vm(workload=True, name="tiny") as vm:
        vm.wait_for_ack(3)
        yield vm


@pytest.fixture
def tiny(guest: TinyVM, private_dirs: Path) -> TinyVM:
    declare(private_dirs / "config", "tiny", guest.qmp_socket, guest.agent_socket)
    return guest


def freeze_status(vm: TinyVM) -> str:
    """The guest's freeze state, once the agent answers us (the watchdog may still hold its channel)."""
    deadline = time.monotonic() + 90
    while True:
        try:
            with GuestAgent(str(vm.agent_socket), timeout=10) as agent:
                return str(agent.execute("guest-fsfreeze-status"))
        except AgentError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def slow_next_freeze(vm: TinyVM) -> None:
    """The guest's next freeze hook sleeps 8 s before the guest freezes (tiny_vm.py)."""
    with GuestAgent(str(vm.agent_socket), timeout=30) as agent:
        handle = agent.execute("guest-file-open", {"path": "/run/slow-freeze", "mode": "w"})
        agent.execute("guest-file-close", {"handle": handle})


def test_writers_list_shows_the_vm_its_disk_and_its_agent(tiny: TinyVM) -> None:
    done = cli("writers", "list", "--json")
    assert done.returncode == 0, done.stderr
    [entry] = [e for e in json.loads(done.stdout) if e["writer"] == "qemu:tiny"]
    assert entry["kind"] == "discovered" and entry["state"] == "stable"
    [disk] = entry["components"]
    assert disk["name"] == "tiny/vda" and disk["kind"] == "vm-disk"
    meta = disk["metadata"]
    assert (meta["node"], meta["format"], meta["guest_agent"]) == ("vda", "qcow2", "answers")
    assert meta["filename"] == str((tiny.directory / "vda.qcow2").resolve())
    listed = cli("vm", "list")
    assert listed.returncode == 0, listed.stderr
    assert "vm: tiny" in listed.stdout and "guest agent: answers" in listed.stdout
    assert "disk: vda (node vda, qcow2, 64.0 MiB)" in listed.stdout


def test_backups_under_load_restore_consistent_with_every_acknowledged_record(
    tiny: TinyVM, tmp_path: Path
) -> None:
    repo = new_repository(tmp_path / "repo")
    results = []
    images: dict[str, Path] = {}
    held_bytes: dict[str, int] = {}
    try:
        for number in range(BACKUPS):
            acked = tiny.acked()  # acknowledged before the freeze: must be in the copy
            result = run_vm_backup(repo, VmBackupRequest(vm="tiny"))
            results.append((acked, result))
            assert result.definition.consistency == "application", result.warnings
            assert result.definition.freeze_window is not None and result.definition.freeze_window > 0
            stats = result.images["vda"]
            if number == 0:
                assert result.parent is None and stats.chunks_reused == 0
                assert stats.zero_chunks > DISK_CHUNKS // 2  # the empty part of the disk is not read
            else:
                assert result.parent == results[-2][1].snapshot_id
                # only the chunks the guest dirtied since the last backup are read
                assert stats.chunks_read + stats.chunks_reused == DISK_CHUNKS
                assert 0 < stats.chunks_read <= DISK_CHUNKS // 10, stats
                assert stats.bytes_read <= stats.chunks_read * CHUNK
                assert stats.bytes_read <= result.definition.disks[0].copied_bytes
            tiny.wait_for_ack(tiny.acked() + 2)  # the guest writes on between backups
        for number, (acked, result) in enumerate(results):
            restored = run_vm_restore(
                repo,
                VmRestoreRequest(
                    snapshot=result.snapshot_id, vm="tiny", target=str(tmp_path / f"r{number}"), format="raw"
                ),
            )
            image = restored.disks["vda"]
            fsck = subprocess.run(
                ["e2fsck", "-fn", image], capture_output=True, text=True, timeout=120, check=False
            )
            assert fsck.returncode == 0, fsck.stdout + fsck.stderr
            held = assert_acknowledged_records(image, acked)
            assert held >= acked
            images[f"r{number}"], held_bytes[f"r{number}"] = Path(image), len(records_in(image))
    finally:
        repo.close()
    # every restored image boots: one boot of the guest's kernel mounts all ten and reads their last
    # record (check_boot.py), while the last one boots from its own definition through the CLI below
    pool = ThreadPoolExecutor(1)
    booting = pool.submit(boot_reading, images, tmp_path)
    # the last one through the CLI as a user would: qcow2 + definition, booted headless to its marker
    target = tmp_path / "booted"
    done = cli(
        "vm",
        "restore",
        "latest",
        "tiny",
        "--target",
        str(target),
        "--verify-boot",
        "--boot-marker",
        READY_MARKER,
        "--json",
        repo=tmp_path / "repo",
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["booted_in"] > 0
    assert answer["disks"] == {"vda": str(target / "vda.qcow2")}
    script = (target / "tiny.sh").read_text()
    assert str(target / "vda.qcow2") in script
    for original in (tiny.directory / "vda.qcow2", tiny.qmp_socket, tiny.agent_socket):
        assert str(original) not in script  # the kernel and initramfs stay where they are
    definition = json.loads((target / "tiny.json").read_text())
    assert definition["consistency"] == "application" and definition["disks"][0]["disk"] == "vda"
    # one file from inside the VM's disk, without restoring the VM
    files = tmp_path / "files"
    done = cli(
        "vm",
        "restore",
        "latest",
        "tiny",
        "--disk",
        "vda",
        "--path",
        "/records",
        "--target",
        str(files),
        repo=tmp_path / "repo",
    )
    assert done.returncode == 0, done.stderr
    data = (files / "records").read_bytes()
    assert data.startswith(b"record 0000000001\n") and len(data) >= results[-1][0] * RECORD_SIZE
    bad = cli(
        "vm",
        "restore",
        "latest",
        "tiny",
        "--disk",
        "vdz",
        "--path",
        "/records",
        "--target",
        str(files),
        repo=tmp_path / "repo",
    )
    assert bad.returncode == 2 and "has no disk vdz" in bad.stderr and "Traceback" not in bad.stderr
    booted = booting.result()
    pool.shutdown()
    assert sorted(booted) == sorted(images)
    for name, size in held_bytes.items():
        assert booted[name] == (size, f"record {size // RECORD_SIZE:010d}"), (name, booted[name])


def test_a_requester_killed_inside_the_freeze_leaves_the_guest_running_and_thawed(
    tiny: TinyVM, tmp_path: Path
) -> None:
    new_repository(tmp_path / "repo").close()
    others = leftovers(tiny.qmp_socket)["bitmaps"]  # bases of the earlier tests' repositories: kept
    slow_next_freeze(tiny)
    hooks_before = tiny.console().count("tinyvm: freeze hook")
    env = dict(os.environ, SHADOWVAULT_PASSWORD=PASSWORD, SHADOWVAULT_VM_SCAN="0", SHADOWVAULT_NO_DAEMON="1")
    requester = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shadowvault.cli.launch",
            "vm",
            "backup",
            "tiny",
            "--repo",
            str(tmp_path / "repo"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while tiny.console().count("tinyvm: freeze hook") == hooks_before:  # the guest is freezing now
            assert requester.poll() is None, requester.stderr.read() if requester.stderr else b""
            assert time.monotonic() < deadline, "the guest never began to freeze"
            time.sleep(0.05)
        requester.send_signal(signal.SIGKILL)
        requester.wait(timeout=30)
    finally:
        if requester.poll() is None:
            requester.kill()
            requester.wait(timeout=30)
    # the freeze the dead requester asked for completes in the guest after its hook; the watchdog
    # thaws it then (the agent answers nothing while the hook runs, "frozen" until the thaw)
    deadline = time.monotonic() + 180
    while (status := freeze_status(tiny)) != "thawed":
        assert time.monotonic() < deadline, f"the guest is still {status}"
        time.sleep(1)
    tiny.wait_for_ack(tiny.acked() + 5, timeout=120)  # and it writes again
    assert qmp(tiny.qmp_socket, "query-status")["status"] == "running"
    deadline = time.monotonic() + 60
    clean = {"jobs": [], "nodes": [], "bitmaps": others}
    while leftovers(tiny.qmp_socket) != clean and time.monotonic() < deadline:
        time.sleep(0.5)  # the watchdog removes our QEMU objects after the thaw
    assert leftovers(tiny.qmp_socket) == clean
    acked = tiny.acked()
    done = cli("vm", "backup", "tiny", "--json", repo=tmp_path / "repo")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["consistency"] == "application"
    restored = cli(
        "vm",
        "restore",
        "latest",
        "tiny",
        "--target",
        str(tmp_path / "r"),
        "--format",
        "raw",
        repo=tmp_path / "repo",
    )
    assert restored.returncode == 0, restored.stderr
    image = str(tmp_path / "r" / "vda.raw")
    fsck = subprocess.run(["e2fsck", "-fn", image], capture_output=True, text=True, timeout=120, check=False)
    assert fsck.returncode == 0, fsck.stdout
    assert_acknowledged_records(image, acked)


def test_a_freeze_that_does_not_answer_in_time_gives_a_crash_consistent_copy_and_a_thawed_guest(
    tiny: TinyVM, tmp_path: Path
) -> None:
    repo = new_repository(tmp_path / "repo")
    try:
        slow_next_freeze(tiny)
        acked = tiny.acked()
        warnings: list[str] = []
        # 4 s for the whole freeze: the agent gets 3 s, the guest's hook takes 8 s
        result = run_vm_backup(repo, VmBackupRequest(vm="tiny", freeze_timeout=4), on_warning=warnings.append)
        assert result.definition.consistency == "crash"
        assert result.snapshot.consistency == {"vm:tiny": "crash"}
        assert any("the guest did not freeze" in w and "crash-consistent" in w for w in warnings), warnings
        restored = run_vm_restore(
            repo,
            VmRestoreRequest(
                snapshot=result.snapshot_id, vm="tiny", target=str(tmp_path / "r"), format="raw"
            ),
        )
    finally:
        repo.close()
    deadline = time.monotonic() + 180
    while (status := freeze_status(tiny)) != "thawed":  # the late freeze was undone
        assert time.monotonic() < deadline, f"the guest is still {status}"
        time.sleep(1)
    tiny.wait_for_ack(tiny.acked() + 5, timeout=120)
    image = restored.disks["vda"]
    # a crash-consistent ext4: its journal is replayed (as at boot after a power cut), then it is clean
    fsck = subprocess.run(["e2fsck", "-fy", image], capture_output=True, text=True, timeout=120, check=False)
    assert fsck.returncode in (0, 1), fsck.stdout
    assert_acknowledged_records(image, acked)


def test_a_libvirt_domain_is_found_through_its_files_and_its_xml_kept(
    guest: TinyVM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """libvirt cannot run guests here (linux-facts.md 8.2): its directories are faked by files that
    point at the tiny guest's real QMP socket, agent channel and QEMU process."""
    root = Path(tempfile.mkdtemp(prefix="sv-lv-"))  # short: a socket path is at most 107 bytes
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    domain = "domain-3-tiny-libvirt"
    monitors = root / "var/lib/libvirt/qemu"
    (monitors / domain).mkdir(parents=True)
    (monitors / domain / "monitor.sock").symlink_to(guest.qmp_socket)
    (monitors / "channel/target" / domain).mkdir(parents=True)
    (monitors / "channel/target" / domain / "org.qemu.guest_agent.0").symlink_to(guest.agent_socket)
    disk = str((guest.directory / "vda.qcow2").resolve())
    (root / "run/libvirt/qemu").mkdir(parents=True)
    assert guest.process is not None
    (root / "run/libvirt/qemu/tiny-libvirt.xml").write_text(
        f"""<domstatus state='running' reason='booted' pid='{guest.process.pid}'>
  <monitor path='/var/lib/libvirt/qemu/{domain}/monitor.sock' type='unix'/>
  <domain type='qemu' id='3'>
    <name>tiny-libvirt</name>
    <memory unit='KiB'>262144</memory>
    <devices>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='{disk}'/>
        <backingStore/>
        <target dev='vda' bus='virtio'/>
      </disk>
    </devices>
  </domain>
</domstatus>
"""
    )
    monkeypatch.setenv(ROOT_ENV, str(root))
    deadline = time.monotonic() + 60
    while leftovers(guest.qmp_socket)["nodes"] and time.monotonic() < deadline:
        time.sleep(0.5)  # an earlier test's watchdog may still be cleaning up (and holding the monitor)
    listed = CliRunner().invoke(main_cli, ["vm", "list", "--json"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.stderr
    [vm] = [v for v in json.loads(listed.stdout) if v["vm"] == "tiny-libvirt"]
    assert vm.get("agent") == "answers" and [d["disk"] for d in vm["disks"]] == ["vda"], vm
    spec = find_vm("tiny-libvirt")
    assert (spec.source, spec.argv) == ("libvirt", guest.argv)  # its command line, from its pid
    repo = new_repository(tmp_path / "repo")
    try:
        result = run_vm_backup(repo, VmBackupRequest(vm="tiny-libvirt"))
        assert result.definition.consistency == "application"
        assert "<name>tiny-libvirt</name>" in result.definition.libvirt_xml
        restored = run_vm_restore(
            repo,
            VmRestoreRequest(
                snapshot=result.snapshot_id, vm="tiny-libvirt", target=str(tmp_path / "r"), format="raw"
            ),
        )
    finally:
        repo.close()
    assert restored.libvirt_definition == str(tmp_path / "r" / "tiny-libvirt.xml")
    xml = ET.parse(restored.libvirt_definition).getroot()
    assert xml.tag == "domain" and "id" not in xml.attrib and xml.findtext("name") == "tiny-libvirt"
    [restored_disk] = xml.iter("disk")
    assert restored_disk.find("source").get("file") == str(tmp_path / "r" / "vda.raw")
    assert restored_disk.find("driver").get("type") == "raw" and restored_disk.find("backingStore") is None
