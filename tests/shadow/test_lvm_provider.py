"""The lvm provider, in the guest lab (this host has no device-mapper): ext4 and XFS on logical volumes,
classic and thin snapshots, under a write load; delete, reap, fsfreeze refused, overflow detected.

Everything runs `shadowvault` inside the guest as a user would, and checks what a user would look at:
the files in the shadow, `lvs`, the mount table, exit codes and messages.
"""

from __future__ import annotations

import itertools
import json
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.fixtures.guest_lab import CLI_SOCKET, GUEST_CLI, GuestLab, guest_lab_fixture

lab = guest_lab_fixture(disks={"pv": "2G"})
VG = "svtest"
_names = itertools.count()

# Appends the same counter to two files, one line at a time, until killed: in an image taken at one
# instant, b has as many lines as a or one fewer, and both count up without a gap.
WRITER = "i=0; while :; do echo $i >> a; echo $i >> b; i=$((i + 1)); done"


@pytest.fixture(scope="module")
def vg(lab: GuestLab) -> str:
    lab.check(f"pvcreate -q {lab.disk('pv')} && vgcreate -q {VG} {lab.disk('pv')}")
    lab.check(f"lvcreate -q --type thin-pool -L 512M -n pool {VG}")
    return VG


@contextmanager
def lvm_volume(lab: GuestLab, vg: str, fstype: str, kind: str) -> Iterator[str]:
    """A fresh logical volume (classic: plain LV; thin: in the pool) with `fstype`, mounted; removed after."""
    name = f"{fstype}{kind}{next(_names)}"
    size = "320M" if fstype == "xfs" else "128M"
    create = f"-L {size} -n {name} {vg}" if kind == "classic" else f"-V {size} --thin -n {name} {vg}/pool"
    mkfs = "mkfs.xfs -q -f" if fstype == "xfs" else "mkfs.ext4 -q"
    mount = f"/mnt/{name}"
    device = f"/dev/{vg}/{name}"
    lab.check(f"lvcreate -q -y -Wy {create} && {mkfs} {device} && mkdir -p {mount} && mount {device} {mount}")
    try:
        yield mount
    finally:
        lab.run(f"umount -R {mount}; lvremove -qy {vg}/{name}; rmdir {mount}")


@contextmanager
def writer(lab: GuestLab, directory: str) -> Iterator[None]:
    """The appending writer running in `directory`, stopped after the block."""
    pid = lab.check(
        f"cd {directory} && setsid sh -c {shlex.quote(WRITER)} </dev/null >/dev/null 2>&1 & echo $!"
    ).stdout.strip()
    try:
        wait_for(lab, f"test $(wc -l < {directory}/a) -ge 50")
        yield
    finally:
        lab.run(f"kill -9 {pid}")


def wait_for(lab: GuestLab, condition: str, timeout: float = 120) -> None:
    """Poll a shell condition in the guest (no timing is asserted: the limit only bounds a hang)."""
    lab.check(f"until {condition}; do sleep 0.2; done", timeout=timeout)


def snapshot_lvs(lab: GuestLab, vg: str) -> list[str]:
    out = lab.check(f"lvs --noheadings -o lv_name {vg}").stdout
    return [name.strip() for name in out.split() if name.strip().startswith("sv-")]


def mounted(lab: GuestLab, path: str) -> bool:
    return lab.run(f"mountpoint -q {shlex.quote(path)}").returncode == 0


def counts_in(lab: GuestLab, directory: str) -> tuple[list[int], list[int]]:
    a = [int(x) for x in lab.check(f"cat {directory}/a").stdout.split()]
    b = [int(x) for x in lab.check(f"cat {directory}/b").stdout.split()]
    return a, b


def created_set(result_json: str) -> dict:
    return json.loads(result_json)


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
@pytest.mark.parametrize("kind", ["classic", "thin"])
def test_a_shadow_under_a_write_load_holds_one_point_in_time(lab: GuestLab, vg: str, fstype, kind):
    with lvm_volume(lab, vg, fstype, kind) as mount:
        lab.check(f"echo before > {mount}/fixed")
        with writer(lab, mount):
            made = lab.sv("shadows", "create", "--volume", mount, "--json")
            assert made.returncode == 0, made.context()
            manifest = created_set(made.stdout)
            (shadow,) = manifest["shadows"]
            assert (shadow["provider"], shadow["atomic"], shadow["frozen"]) == ("lvm", True, True)
            assert shadow["provider_data"]["kind"] == kind
            path = shadow["path"]
            assert shadow["provider_data"]["lv"] in snapshot_lvs(lab, vg)
            assert mounted(lab, path)

            lab.check(f"echo after > {mount}/fixed")
            taken_a, taken_b = counts_in(lab, path)
            wait_for(lab, f"test $(wc -l < {mount}/a) -gt {len(taken_a) + 20}")

        assert lab.check(f"cat {path}/fixed").stdout == "before\n"
        assert lab.check(f"cat {mount}/fixed").stdout == "after\n"
        assert taken_a == list(range(len(taken_a))) and len(taken_a) >= 50
        assert taken_b == list(range(len(taken_b))) and len(taken_b) in (len(taken_a), len(taken_a) - 1)
        lab.check("sync && echo 3 > /proc/sys/vm/drop_caches")  # read the snapshot's blocks again
        assert counts_in(lab, path) == (taken_a, taken_b)
        assert lab.run(f"touch {path}/new").returncode != 0  # read-only

        deleted = lab.sv("shadows", "delete", manifest["id"])
        assert deleted.returncode == 0, deleted.context()
        assert snapshot_lvs(lab, vg) == []
        assert not mounted(lab, path)
        assert lab.run(f"test -e {path}").returncode != 0


def test_volumes_list_offers_lvm_first_for_a_filesystem_on_a_logical_volume(lab: GuestLab, vg: str):
    with lvm_volume(lab, vg, "ext4", "classic") as mount:
        listed = lab.sv("volumes", "list", "--json")
        assert listed.returncode == 0, listed.context()
        (volume,) = [v for v in json.loads(listed.stdout) if v["mount_point"] == mount]
        assert volume["providers"][0] == "lvm"
        (root,) = [v for v in json.loads(listed.stdout) if v["mount_point"] == "/"]
        assert "not on an LVM logical volume" in root["unsupported"]["lvm"]


def test_fsfreeze_with_lvm_is_refused_before_anything_is_made(lab: GuestLab, vg: str):
    with lvm_volume(lab, vg, "ext4", "classic") as mount:
        refused = lab.sv("shadows", "create", "--volume", mount, "--writer", "fsfreeze")
        assert refused.returncode == 2, refused.context()
        assert "lvm freezes the filesystem itself" in refused.stderr
        assert snapshot_lvs(lab, vg) == []
        lab.check(f"touch {mount}/still-writable")  # not left frozen


def test_the_set_of_a_killed_requester_is_reaped(lab: GuestLab, vg: str):
    with lvm_volume(lab, vg, "xfs", "classic") as mount:
        call = shlex.join(["python3", "-S", GUEST_CLI, "call", CLI_SOCKET, "exec", "--volume", mount])
        lab.check(f"setsid {call} -- sleep 600 </dev/null >/tmp/exec.log 2>&1 &")
        wait_for(lab, f"lvs --noheadings -o lv_name {vg} | grep -q sv-")
        listed = json.loads(lab.sv("shadows", "list", "--json").stdout)
        (held,) = listed
        requester = held["requester_pid"]
        lab.check(f"pkill -9 -P {requester} sleep; kill -9 {requester}")
        wait_for(lab, f"! kill -0 {requester} 2>/dev/null")

        listed_after = lab.sv("shadows", "list", "--json")  # reaps the sets of ended requesters
        assert json.loads(listed_after.stdout) == [], listed_after.context()
        assert snapshot_lvs(lab, vg) == []
        assert not mounted(lab, held["shadows"][0]["path"])


def test_a_snapshot_no_record_knows_is_removed_as_an_orphan(lab: GuestLab, vg: str):
    with lvm_volume(lab, vg, "ext4", "thin") as mount:
        first = created_set(lab.sv("shadows", "create", "--volume", mount, "--json").stdout)
        lab.check(f"rm /var/lib/shadowvault/sets/{first['id']}.json")  # the record lost
        second = lab.sv("shadows", "create", "--volume", mount, "--json")
        assert second.returncode == 0, second.context()
        kept = created_set(second.stdout)["shadows"][0]
        assert snapshot_lvs(lab, vg) == [kept["provider_data"]["lv"]]
        assert not mounted(lab, first["shadows"][0]["path"])
        assert lab.sv("shadows", "delete", "--all").returncode == 0
        assert snapshot_lvs(lab, vg) == []


@pytest.fixture
def overflowing_setup(lab: GuestLab) -> Iterator[Callable[[str], None]]:
    """A tiny share for classic snapshots, and a script writer whose thaw rewrites 48 MiB of `mount`."""

    def install(mount: str) -> None:
        lab.check("mkdir -p /etc/shadowvault/writers.d")
        lab.check("printf '[lvm]\\nsnapshot_share = \"1%%\"\\n' > /etc/shadowvault/shadowvault.toml")
        lab.check(
            "printf '#!/bin/sh\\ndd if=/dev/urandom of=%s/filler bs=1M count=48 conv=fsync 2>/dev/null\\n' "
            f"{mount} > /usr/local/sbin/sv-filler && chmod 755 /usr/local/sbin/sv-filler"
        )
        lab.check(
            'printf \'type = "script"\\nthaw = ["/usr/local/sbin/sv-filler"]\\npaths = ["%s"]\\n\' '
            f"{mount} > /etc/shadowvault/writers.d/filler.toml"
        )

    try:
        yield install
    finally:
        lab.run("rm -rf /etc/shadowvault /usr/local/sbin/sv-filler /tmp/repo")


def test_a_classic_snapshot_that_overflows_fails_the_backup_loudly(lab: GuestLab, vg: str, overflowing_setup):
    env = {"SHADOWVAULT_PASSWORD": "secret"}
    with lvm_volume(lab, vg, "ext4", "classic") as mount:
        lab.check(f"for i in 1 2 3; do head -c 3000000 /dev/urandom > {mount}/file$i; done")
        overflowing_setup(mount)
        assert lab.sv("init", "-r", "/tmp/repo", env=env).returncode == 0

        backup = lab.sv("backup", "-r", "/tmp/repo", mount, env=env)

        assert backup.returncode == 1, backup.context()
        last = backup.stderr.strip().splitlines()[-1]
        assert "overflowed" in last and "snapshot_share" in last, backup.context()
        assert "Traceback" not in backup.stderr
        listed = lab.sv("snapshots", "-r", "/tmp/repo", "--json", env=env)
        assert json.loads(listed.stdout) == [], listed.context()
        assert snapshot_lvs(lab, vg) == []
