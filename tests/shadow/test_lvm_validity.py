"""Classic LVM snapshots that overflow, in the guest lab: backup and exec fail loudly, a persistent
set is listed invalid and not exposed, its exposures are unmounted (or named while in use), and a
listing asks LVM once (one `lvs`) about every shadow it shows.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator

import pytest

from tests.fixtures.guest_lab import GuestLab, shared_guest_lab_fixture
from tests.shadow.lvm_guest import (
    SLOW,
    created_set,
    init_repository,
    install_script_writer,
    lvm_configured,
    lvm_volume,
    mounted,
    overflow,
    overwrite_command,
    snapshot_lvs,
    volume_group,
)

lab = shared_guest_lab_fixture()  # disk `pv`; the first module to use the guest may build its image
pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def vg(lab: GuestLab) -> Iterator[str]:
    with volume_group(lab) as name:
        yield name


@pytest.fixture
def lvm_config(lab: GuestLab) -> Iterator[Callable[[str], None]]:
    with lvm_configured(lab) as share:
        yield share


@pytest.fixture
def overflowing_setup(lab: GuestLab, lvm_config) -> Callable[[str], None]:
    """A tiny share for classic snapshots, and a script writer whose thaw rewrites 48 MiB of `mount`."""

    def install(mount: str) -> None:
        lvm_config('"1%"')
        install_script_writer(lab, "filler", mount, thaw=overwrite_command(mount))

    return install


@contextlib.contextmanager
def counting_lvs(lab: GuestLab) -> Iterator[Callable[[], list[str]]]:
    """`lvs` in the guest logs each call (its arguments) and runs the real one; put back after."""
    lvs = lab.check("command -v lvs").stdout.strip()
    lab.check(
        f"rm -f /tmp/lvs.log && mv {lvs} {lvs}.real && cat > {lvs} && chmod 755 {lvs}",
        input='#!/bin/sh\necho "$*" >> /tmp/lvs.log\nexec lvm lvs "$@"\n',
    )
    try:
        yield lambda: lab.check("cat /tmp/lvs.log 2>/dev/null || true").stdout.splitlines()
    finally:
        lab.check(f"mv {lvs}.real {lvs}")


def test_a_classic_snapshot_that_overflows_fails_backup_and_exec_loudly(
    lab: GuestLab, vg: str, overflowing_setup
):
    env = {"SHADOWVAULT_PASSWORD": "secret"}
    with lvm_volume(lab, vg, "ext4", "classic") as mount:
        lab.check(f"for i in 1 2 3; do head -c 3000000 /dev/urandom > {mount}/file$i; done")
        overflowing_setup(mount)
        init_repository(lab, "/tmp/repo", env["SHADOWVAULT_PASSWORD"])

        backup = lab.sv("backup", "-r", "/tmp/repo", mount, env=env)

        assert backup.returncode == 1, backup.context()
        last = backup.stderr.strip().splitlines()[-1]
        assert "overflowed" in last and "snapshot_share" in last, backup.context()
        assert "Traceback" not in backup.stderr
        listed = lab.sv("snapshots", "-r", "/tmp/repo", "--json", env=env)
        assert json.loads(listed.stdout) == [], listed.context()
        assert snapshot_lvs(lab, vg) == []

        ran = lab.sv("exec", "--volume", mount, *SLOW, "--", "cat", "{shadow}/file1")
        assert ran.returncode == 1, ran.context()
        assert "overflowed" in ran.stderr.strip().splitlines()[-1], ran.context()
        assert snapshot_lvs(lab, vg) == []


def test_a_persistent_set_whose_classic_snapshot_overflows_is_listed_invalid_and_not_exposed(
    lab: GuestLab, vg: str, lvm_config
):
    with lvm_volume(lab, vg, "ext4", "classic") as mount:
        lvm_config('"1%"')
        made = lab.sv("shadows", "create", "--volume", mount, *SLOW, "--json")
        assert made.returncode == 0, made.context()
        manifest = created_set(made.stdout)
        assert manifest["persistent"] and manifest["shadows"][0]["invalid"] == ""
        snapshot = f"{vg}/{manifest['shadows'][0]['provider_data']['lv']}"
        # While lvs fails, nobody can tell: the listing says so and marks nothing, expose refuses.
        lvs = lab.check("command -v lvs").stdout.strip()
        lab.check(f"mv {lvs} {lvs}.off && ln -s /bin/false {lvs}")
        try:
            unsure = lab.sv("shadows", "list", "--json")
            exposed = lab.sv("shadows", "expose", manifest["id"], "--at", "/mnt/view")
        finally:
            lab.check(f"rm {lvs} && mv {lvs}.off {lvs}")
        assert unsure.returncode == 0 and "cannot check the lvm snapshot" in unsure.stderr, unsure.context()
        assert json.loads(unsure.stdout)[0]["shadows"][0]["invalid"] == ""
        assert exposed.returncode == 1 and "cannot check the lvm snapshot" in exposed.stderr, exposed.stderr
        # More than its space for changes rewritten: the kernel drops the snapshot ('I' in lv_attr).
        overflow(lab, mount, snapshot)

        # Nobody has read it: the listing asks the provider, and the store keeps what it said.
        listed = lab.sv("shadows", "list", "--json")
        (shadow,) = json.loads(listed.stdout)[0]["shadows"]
        assert "overflowed" in shadow["invalid"] and "snapshot_share" in shadow["invalid"], listed.context()
        human = lab.sv("shadows", "list").stdout
        assert f"shadow of {mount} (lvm, INVALID: the lvm snapshot {snapshot} of {mount} overflowed" in human

        exposed = lab.sv("shadows", "expose", manifest["id"], "--at", "/mnt/view")
        assert exposed.returncode == 1, exposed.context()
        (line,) = exposed.stderr.strip().splitlines()
        assert line.startswith(f"shadowvault: error: cannot expose the shadow of {mount}: the lvm snapshot")
        assert "overflowed" in line and lab.run("test -e /mnt/view").returncode != 0

        assert lab.sv("shadows", "delete", manifest["id"]).returncode == 0
        assert snapshot_lvs(lab, vg) == []


def test_the_exposures_of_a_shadow_that_overflows_are_unmounted_and_one_in_use_is_named(
    lab: GuestLab, vg: str, lvm_config
):
    with lvm_volume(lab, vg, "ext4", "classic") as mount:
        lvm_config('"1%"')
        lab.check(f"echo before > {mount}/kept")
        made = lab.sv("shadows", "create", "--volume", mount, *SLOW, "--json")
        assert made.returncode == 0, made.context()
        manifest = created_set(made.stdout)
        snapshot = f"{vg}/{manifest['shadows'][0]['provider_data']['lv']}"
        for view in ("/mnt/view-a", "/mnt/view-b"):
            exposed = lab.sv("shadows", "expose", manifest["id"], "--at", view)
            assert exposed.returncode == 0, exposed.context()
        assert lab.check("cat /mnt/view-a/kept /mnt/view-b/kept").stdout == "before\nbefore\n"
        # Someone works in /mnt/view-b (its cwd there): that mount is busy.
        reader = lab.check("cd /mnt/view-b && setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!")
        try:
            overflow(lab, mount, snapshot)

            listed = lab.sv("shadows", "list")

            assert listed.returncode == 0, listed.context()
            assert f"shadow of {mount} (lvm, INVALID: the lvm snapshot {snapshot}" in listed.stdout
            # The free exposure is gone (its directory too, which expose made); the busy one stays,
            # shown invalid, and the listing says why it could not be unmounted.
            assert not mounted(lab, "/mnt/view-a") and lab.run("test -e /mnt/view-a").returncode != 0
            assert "exposed at /mnt/view-a" not in listed.stdout
            assert f"exposed at /mnt/view-b (shadow of {mount}, INVALID: reads there may" in listed.stdout
            assert mounted(lab, "/mnt/view-b")
            (warning,) = listed.stderr.strip().splitlines()
            assert f"the shadow of {mount} (set {manifest['id']}) is invalid and still exposed" in warning
            assert "cannot unexpose /mnt/view-b: it is busy" in warning, warning
        finally:
            lab.run(f"kill -9 {reader.stdout.strip()}")

        # Once nothing uses it, the next listing unmounts it.
        again = lab.sv("shadows", "list", "--json")
        assert again.returncode == 0 and again.stderr == "", again.context()
        (listed_set,) = json.loads(again.stdout)
        assert listed_set["exposures"] == [] and "overflowed" in listed_set["shadows"][0]["invalid"]
        assert not mounted(lab, "/mnt/view-b") and lab.run("test -e /mnt/view-b").returncode != 0
        assert lab.sv("shadows", "delete", manifest["id"]).returncode == 0
        assert snapshot_lvs(lab, vg) == []


def test_a_listing_asks_lvm_once_about_every_shadow_of_every_set(lab: GuestLab, vg: str, lvm_config):
    with contextlib.ExitStack() as stack:
        classic = stack.enter_context(lvm_volume(lab, vg, "ext4", "classic"))
        thin = stack.enter_context(lvm_volume(lab, vg, "xfs", "thin"))
        lvm_config('"1%"')
        sets = []
        for volumes in ((classic, thin), (thin,), (classic,)):
            made = lab.sv("shadows", "create", *(f"--volume={v}" for v in volumes), *SLOW, "--json")
            assert made.returncode == 0, made.context()
            sets.append(created_set(made.stdout))
        stack.callback(lab.sv, "shadows", "delete", "--all")
        # Both classic snapshots overflow; the thin ones hold.
        lab.check(overwrite_command(classic))

        with counting_lvs(lab) as lvs_calls:
            listed = lab.sv("shadows", "list", "--json")
            calls = lvs_calls()

        assert listed.returncode == 0, listed.context()
        # Four lvm shadows in three sets on two volumes: one lvs reads the state of every snapshot,
        # and one looks for orphans on both volumes (the listing reaps), however many there are.
        assert len(calls) == 2 and len([c for c in calls if "data_percent" in c]) == 1, calls
        states = {
            (s["id"], shadow["volume"]): shadow["invalid"]
            for s in json.loads(listed.stdout)
            for shadow in s["shadows"]
        }
        assert len(states) == 4 and {s["id"] for s in sets} == {set_id for set_id, _ in states}
        for (_, volume), invalid in states.items():
            if volume == classic:
                assert "overflowed" in invalid, invalid
            else:
                assert invalid == "", invalid
