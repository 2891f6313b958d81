"""Bare-metal recovery, proven by booting: a Debian disk image is backed up from its mounted
partitions, recovered onto a smaller empty disk image, and the recovered disk boots under QEMU/TCG
through its own MBR and extlinux to systemd's multi-user target and a login prompt, where the boot
probe shows the user, the enabled unit, the package and the data (tests/recover/machine.py)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.disk.layout import BootloaderRecord, DiskLayout, FilesystemRecord, PartitionRecord
from shadowvault.disk.partition import read_table
from shadowvault.errors import UsageError
from shadowvault.recover.fixes import fix_fstab_text
from shadowvault.recover.plan import build_plan, fit_partitions, needed_size
from shadowvault.recover.target import TargetDisk
from tests.inprocess_cli import json_out, one_error_line, run
from tests.recover.machine import (
    ARCHIVE_NOTE,
    ARCHIVE_UUID,
    DISK_SIGNATURE,
    MACHINE_ID,
    ROOT_UUID,
    Backup,
    backed_up_machine,
    boot_until_login,
    probe_facts,
    recover_onto,
)

pytestmark = pytest.mark.lab  # builds a machine and boots its recovered disk (make test-lab)

MIB = 1 << 20
TARGET_SIZE = 768 * MIB  # smaller than the source's 1 GiB: the data fits
BOOT_UUID = "5eed0003-7a11-4b0c-9d0e-0123456789ab"


@pytest.fixture(scope="module")
def backup() -> Iterator[Backup]:
    """The extlinux source machine built, backed up from its mounted image, and taken apart again."""
    with backed_up_machine("extlinux") as built:
        yield built


def _empty_disk(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_recover_onto_a_smaller_empty_disk_boots_as_the_source_machine(backup: Backup) -> None:
    target = _empty_disk(backup.directory / "target.img", TARGET_SIZE)
    done = recover_onto(backup, target)
    assert done.summary["errors"] == [] and done.mounts_left == []
    assert any("partitions shrunk" in w for w in done.plan["warnings"])
    table = read_table(str(target))
    assert table is not None and table.disk_signature == DISK_SIGNATURE
    assert [p.number for p in table.partitions] == [1, 2] and table.partitions[0].bootable
    assert table.partitions[1].start + table.partitions[1].size <= TARGET_SIZE

    console = boot_until_login(target, backup.directory / "serial.log")
    facts = probe_facts(console)
    assert facts["target"] == "active", console
    assert "(alice)" in facts["id"] and "(devs)" in facts["id"], console
    assert facts["probe-app"] == "enabled active", console
    assert facts["probe-app ran"] == "greeting=from the source machine", console
    assert facts["hello"].startswith("install ok installed 2.10") and facts["hello"].endswith("Hello, world!")
    assert facts["data"] == backup.data_sha256, console
    assert facts["archive"] == f"{ARCHIVE_NOTE.strip()} svarchive", console
    assert facts["root"] == ROOT_UUID, console
    assert facts["machine-id"] == MACHINE_ID, console  # the same machine, unless --new-machine-id
    assert "sourcebox login:" in console, console


def test_dry_run_prints_the_recorded_layout_and_writes_nothing(backup: Backup) -> None:
    target = _empty_disk(backup.directory / "dry.img", 2048 * MIB)
    plan = json_out(run(backup.env, "recover", "--disk", target, backup.snapshot, "--dry-run", "--json"))
    assert isinstance(plan, dict) and plan["message_type"] == "plan"
    actions = {(a["verb"], a["kind"], a["target"]): a["reason"] for a in plan["actions"]}
    assert actions[("create", "fs", "/")] == f"ext4 UUID={ROOT_UUID} LABEL=svroot on #1"
    assert actions[("create", "fs", "/srv/archive")] == f"ext4 UUID={ARCHIVE_UUID} LABEL=svarchive on #2"
    assert actions[("create", "partition", f"{target} #1")] == "1-897 MiB (896 MiB), type 83, bootable"
    assert ("run", "restore", "files") in actions and ("run", "restore", "system-state") in actions
    assert ("install", "boot", "extlinux") in actions
    assert plan["warnings"] == []  # a larger disk keeps the recorded partitions
    with open(target, "rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20)


def test_refusals_are_one_line_and_touch_nothing(backup: Backup) -> None:
    small = _empty_disk(backup.directory / "small.img", 200 * MIB)
    line = one_error_line(run(backup.env, "recover", "--disk", small, backup.snapshot))
    assert "holds 200 MiB" in line and "need at least" in line
    busy = _empty_disk(backup.directory / "busy.img", TARGET_SIZE)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(busy)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        line = one_error_line(run(backup.env, "recover", "--disk", busy, backup.snapshot))
        assert f"in use by {device}" in line
    finally:
        subprocess.run(["losetup", "-d", device], check=True)
    mounted_image = _empty_disk(backup.directory / "mounted.img", 64 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(mounted_image)], check=True)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(mounted_image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    where = backup.directory / "mounted"
    where.mkdir()
    try:
        subprocess.run(["mount", device, str(where)], check=True)
        try:
            line = one_error_line(run(backup.env, "recover", "--disk", device, backup.snapshot))
            assert line.endswith(
                f"{device} is mounted (it or one of its partitions): refusing to overwrite it"
            )
            assert (where / "lost+found").is_dir()
        finally:
            subprocess.run(["umount", str(where)], check=True)
    finally:
        subprocess.run(["losetup", "-d", device], check=True)
    line = one_error_line(run(backup.env, "recover", "--disk", "/dev/null", backup.snapshot))
    assert "neither a disk image nor a block device" in line
    for path in (small, busy):
        with open(path, "rb") as f:
            assert f.read(512) == bytes(512)


def test_fstab_names_the_recorded_filesystems_by_uuid() -> None:
    records = [
        FilesystemRecord(mount_point="/", fstype="ext4", uuid="new-root", partition=1, label="r"),
        FilesystemRecord(mount_point="/srv", fstype="xfs", uuid="srv-uuid", partition=2),
    ]
    text = (
        "# comment\n/dev/sda1 / ext4 defaults 0 1\n"
        "UUID=srv-uuid /srv xfs noatime 0 2\ntmpfs /tmp tmpfs size=1g 0 0\n"
    )
    fixed, notes = fix_fstab_text(text, records)
    assert fixed.splitlines() == [
        "# comment",
        "UUID=new-root\t/\text4\tdefaults\t0\t1",
        "UUID=srv-uuid\t/srv\txfs\tnoatime\t0\t2",
        "tmpfs\t/tmp\ttmpfs\tsize=1g\t0\t0",
    ]
    assert notes == ["/: /dev/sda1 -> UUID=new-root"]


def test_a_backup_of_slash_keeps_the_component_documents(backup: Backup) -> None:
    """`/` as the files component's path must not hide the generated documents (the layout among them)."""
    done = run(backup.env, "ls", backup.snapshot, "/.shadowvault-components/system-state")
    assert done.exit_code == 0, done.stderr
    assert "/.shadowvault-components/system-state/disk-layout.json" in done.stdout.splitlines()


def test_an_edited_layout_gives_the_root_another_uuid(backup: Backup) -> None:
    """`recover --layout FILE`: the recorded layout, taken out with `dump` and edited, is what is planned."""
    done = run(backup.env, "dump", backup.snapshot, "/.shadowvault-components/system-state/disk-layout.json")
    assert done.exit_code == 0, done.stderr
    layout = json.loads(done.stdout)
    new_uuid = "0dd00001-7a11-4b0c-9d0e-0123456789ab"
    (root,) = [f for f in layout["filesystems"] if f["mount_point"] == "/"]
    root["uuid"] = new_uuid
    edited = backup.directory / "layout.json"
    edited.write_text(json.dumps(layout))
    target = _empty_disk(backup.directory / "edited.img", 2048 * MIB)
    plan = json_out(
        run(
            backup.env,
            "recover",
            "--disk",
            target,
            backup.snapshot,
            "--layout",
            edited,
            "--dry-run",
            "--json",
        )
    )
    assert isinstance(plan, dict)
    actions = {(a["verb"], a["kind"], a["target"]): a["reason"] for a in plan["actions"]}
    assert actions[("create", "fs", "/")] == f"ext4 UUID={new_uuid} LABEL=svroot on #1"
    assert actions[("replace", "boot", "/boot/extlinux/extlinux.conf")] == f"UUID {ROOT_UUID} -> {new_uuid}"
    (backup.directory / "notes.txt").write_text("not a layout\n")
    notes = backup.directory / "notes.txt"
    line = one_error_line(run(backup.env, "recover", "--disk", target, backup.snapshot, "--layout", notes))
    assert "is not a disk layout" in line


def test_partitions_shrink_toward_their_data_on_a_smaller_disk() -> None:
    layout = DiskLayout(
        disk_size=4096 * MIB,
        partitions=[
            PartitionRecord(number=1, start=MIB, size=3071 * MIB, type_id=0x83, bootable=True),
            PartitionRecord(number=2, start=3072 * MIB, size=1024 * MIB, type_id=0x83),
        ],
        filesystems=[
            FilesystemRecord(mount_point="/", fstype="ext4", uuid="a", partition=1, used=500 * MIB),
            FilesystemRecord(mount_point="/srv", fstype="xfs", uuid="b", partition=2, used=10 * MIB),
        ],
    )
    same, shrunk = fit_partitions(layout, 4096 * MIB)
    assert not shrunk and [(p.start, p.size) for p in same] == [(MIB, 3071 * MIB), (3072 * MIB, 1024 * MIB)]
    placed, shrunk = fit_partitions(layout, 2048 * MIB)
    root, srv = placed
    assert shrunk and root.bootable and root.start == MIB and srv.start == root.start + root.size
    assert srv.start + srv.size <= 2048 * MIB
    assert root.size >= needed_size(layout.filesystems[0]) and srv.size >= 300 * MIB  # XFS's minimum
    with pytest.raises(UsageError, match="holds 700 MiB; the recorded filesystems need at least"):
        fit_partitions(layout, 700 * MIB)


def test_the_partition_holding_extlinux_is_made_active_when_none_was() -> None:
    layout = DiskLayout(
        partitions=[
            PartitionRecord(number=1, start=MIB, size=64 * MIB, type_id=0x83),
            PartitionRecord(number=2, start=65 * MIB, size=512 * MIB, type_id=0x83),
        ],
        filesystems=[
            FilesystemRecord(mount_point="/boot", fstype="ext4", uuid=BOOT_UUID, partition=1),
            FilesystemRecord(mount_point="/", fstype="ext4", uuid=ROOT_UUID, partition=2),
        ],
        bootloader=BootloaderRecord(kind="extlinux", config="/boot/extlinux/extlinux.conf"),
    )
    plan = build_plan(
        layout, TargetDisk("/dev/null", 1024 * MIB, is_device=False), "0" * 64, new_machine_id=True
    )
    assert [p.bootable for p in plan.data["table"].partitions] == [True, False]
    assert plan.targets("create", "fs") == {"/", "/boot"}
    assert ("replace", "file", "/etc/machine-id") in {(a.verb, a.kind, a.target) for a in plan.actions}


def test_recover_onto_a_whole_disk_block_device(backup: Backup) -> None:
    """A block device as the target (a loop device over an image stands for /dev/sdX): same result."""
    image = _empty_disk(backup.directory / "device.img", TARGET_SIZE)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        done = run(backup.env, "recover", "--disk", device, backup.snapshot, "--new-machine-id")
        assert done.exit_code == 0, done.stderr
        assert "recovered " + device in done.stdout
    finally:
        subprocess.run(["losetup", "-d", device], check=True)
    table = read_table(str(image))
    assert table is not None
    root = table.partitions[0]
    part = subprocess.run(
        [
            "losetup",
            "--find",
            "--show",
            "-r",
            "-o",
            str(root.start),
            "--sizelimit",
            str(root.size),
            str(image),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    where = backup.directory / "device-root"
    where.mkdir()
    try:
        probe = subprocess.run(["blkid", "-p", "-o", "export", part], capture_output=True, text=True)
        assert f"UUID={ROOT_UUID}" in probe.stdout.splitlines() and "LABEL=svroot" in probe.stdout
        subprocess.run(["mount", "-o", "ro", part, str(where)], check=True)
        try:
            assert (where / "etc/hostname").read_text() == "sourcebox\n"
            assert (where / "etc/machine-id").read_text() == ""  # --new-machine-id
            assert (where / "boot/extlinux/ldlinux.sys").is_file()
            assert not (where / ".shadowvault-components").exists()
            alice = where / "home/alice"
            assert (alice.stat().st_uid, alice.stat().st_gid) == (1000, 1000)
        finally:
            subprocess.run(["umount", str(where)], check=True)
    finally:
        subprocess.run(["losetup", "-d", part], check=True)
