"""System-state restore into a fresh minbase root, proven by booting the result with systemd-nspawn."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.components.base import CollectOptions, DirectoryView, RestoreOptions
from shadowvault.components.dpkg import installed_names, read_packages
from shadowvault.components.system_state import SystemState
from shadowvault.components.units import read_units
from tests.components.machines import change_source_machine
from tests.fixtures.debootstrap import boot, minbase_root, nspawn
from tests.fixtures.tools import require_root, require_tools

pytestmark = pytest.mark.lab  # builds Debian roots and boots one with systemd-nspawn (make test-lab)

PROBE_SCRIPT = """#!/bin/sh
{
echo "id: $(id alice)"
echo "devs: $(getent group devs)"
echo "passwd: $(getent shadow alice | cut -d: -f2)"
echo "probe-app enabled: $(systemctl is-enabled probe-app.service)"
echo "probe-app active: $(systemctl is-active probe-app.service)"
echo "probe-app ran: $(cat /var/lib/probe-app/ran)"
echo "apt-daily.timer: $(systemctl is-enabled apt-daily.timer)"
echo "e2scrub_reap: $(systemctl is-enabled e2scrub_reap.service)"
echo "hello: $(dpkg-query -W -f '${Status} ${Version}' hello)"
echo "hello says: $(hello)"
echo "hostname: $(hostname)"
echo "system: $(systemctl is-system-running)"
} > /sv-probe.out 2>&1
systemctl --no-block poweroff
"""

PROBE_UNIT = """[Unit]
Description=shadowvault restore probe
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/sv-probe

[Install]
WantedBy=multi-user.target
"""


@pytest.fixture(scope="module")
def source_machine() -> Iterator[Path]:
    require_root()
    require_tools("debootstrap", "systemd-nspawn", "tar")
    with minbase_root("sv-source-") as root:
        change_source_machine(root)
        yield root


@pytest.fixture
def fresh_target() -> Iterator[Path]:
    with minbase_root("sv-target-") as root:
        yield root


def _collect(source: Path, staging: Path) -> DirectoryView:
    collection = SystemState().collect(source, CollectOptions())
    collection.write_documents(staging)
    return DirectoryView(source, documents_root=staging)


def test_collect_records_packages_units_and_conffiles(source_machine: Path) -> None:
    packages = read_packages(source_machine)
    manual = {p.name for p in packages.manual()}
    assert "hello" in manual and "libexpat1" not in manual  # auto-installed with dbus
    states = packages.conffile_states()
    assert states["/etc/issue"].state == "modified"
    assert states["/etc/login.defs"].state == "default"
    units = read_units(source_machine)
    assert "etc/systemd/system/multi-user.target.wants/probe-app.service" in {lk.path for lk in units.links}
    assert "apt-daily.timer" in units.masked
    assert "e2scrub_reap.service" in units.disabled
    collection = SystemState().collect(source_machine, CollectOptions())
    assert collection.paths[:2] == ["/etc", "/var/spool/cron/crontabs"]
    assert b"alice" in collection.documents["accounts.json"]


def test_system_state_restore_boots_as_the_source_machine(
    source_machine: Path, fresh_target: Path, cli, env: dict[str, str]
) -> None:
    """The proof: back up a changed minbase machine, restore its system state into a fresh one, boot it."""
    done = cli(
        "backup", "--component", "system-state", "--source-root", str(source_machine), "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    snap = next(m for m in map(json.loads, done.stdout.splitlines()) if m["message_type"] == "summary")
    snap_id = snap["snapshot_id"]
    target = fresh_target
    # the target already has its own account on uid 1000 and a local change to an untouched conffile
    done = nspawn(target, "useradd", "-m", "-u", "1000", "-s", "/bin/bash", "bob")
    assert done.returncode == 0, done.stderr
    with open(target / "etc/login.defs", "a") as defs:
        defs.write("# local to the target\n")
    hostname_before = (target / "etc/hostname").read_text()

    restore = ("restore", snap_id, "--component", "system-state", "--target-root", str(target))
    dry = cli(*restore, "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    (doc,) = [m for m in map(json.loads, dry.stdout.splitlines()) if m["message_type"] == "plan"]
    plan = {(a["verb"], a["kind"], a["target"]) for a in doc["actions"]}
    # the dry-run plan: nothing written, and it says what will happen
    assert (target / "etc/hostname").read_text() == hostname_before
    assert ("install", "package", "hello") in plan
    assert any(
        verb == "run" and "apt-get install" in what and "hello=2.10-3" in what for verb, _, what in plan
    )
    assert ("create", "user", "alice") in plan
    assert ("enable", "unit", "/etc/systemd/system/multi-user.target.wants/probe-app.service") in plan
    assert ("mask", "unit", "apt-daily.timer") in plan
    assert ("disable", "unit", "/etc/systemd/system/multi-user.target.wants/e2scrub_reap.service") in plan
    assert ("replace", "file", "/etc/hostname") in plan
    assert ("leave", "file", "/etc/login.defs") in plan  # unchanged on the source: target's copy kept
    assert ("replace", "file", "/etc/issue") in plan  # changed on the source: taken
    assert ("leave", "fstab", "/etc/fstab") in plan
    assert "hello" not in installed_names(target)

    done = cli(*restore, env=env)
    assert done.returncode == 0, done.stderr
    assert "hello" in installed_names(target)
    assert (target / "etc/login.defs").read_text().endswith("# local to the target\n")
    assert "Property of the source machine" in (target / "etc/issue").read_text()
    assert "UNCONFIGURED FSTAB" in (target / "etc/fstab").read_text()  # not clobbered
    assert not (target / "usr/sbin/policy-rc.d").exists()  # the no-services guard is gone
    tab = target / "var/spool/cron/crontabs/alice"
    alice_uid = int(
        next(ln for ln in (target / "etc/passwd").read_text().splitlines() if ln.startswith("alice:")).split(
            ":"
        )[2]
    )
    assert alice_uid != 1000  # bob has it in the target
    assert tab.stat().st_uid == alice_uid and (tab.stat().st_mode & 0o777) == 0o600

    # boot it: systemd as PID 1 runs the probe, which records what it sees and powers off
    probe = target / "usr/local/sbin/sv-probe"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text(PROBE_SCRIPT)
    os.chmod(probe, 0o755)
    (target / "etc/systemd/system/sv-probe.service").write_text(PROBE_UNIT)
    (target / "etc/systemd/system/multi-user.target.wants/sv-probe.service").symlink_to(
        "/etc/systemd/system/sv-probe.service"
    )
    booted = boot(target)
    out = (target / "sv-probe.out").read_text() if (target / "sv-probe.out").exists() else ""
    assert out, f"the probe did not run: {booted.returncode} {booted.stdout[-2000:]} {booted.stderr[-2000:]}"
    facts = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    assert f"uid={alice_uid}(alice)" in facts["id"] and "(devs)" in facts["id"], out
    assert facts["devs"].startswith("devs:x:1500:") and "alice" in facts["devs"], out
    assert facts["passwd"].startswith("$y$j9T$abc$"), out
    assert facts["probe-app enabled"] == "enabled", out
    assert facts["probe-app active"] == "active", out
    assert facts["probe-app ran"] == "greeting=from the source machine", out
    assert facts["apt-daily.timer"] == "masked", out
    assert facts["e2scrub_reap"] == "disabled", out
    assert facts["hello"].startswith("install ok installed 2.10"), out
    assert facts["hello says"] == "Hello, world!", out
    assert facts["hostname"] == "sourcebox", out


def test_fix_fstab_takes_the_targets_devices(
    source_machine: Path, fresh_target: Path, tmp_path: Path, ext4
) -> None:
    view = _collect(source_machine, tmp_path / "staging")
    target = fresh_target
    (target / "etc/fstab").write_text("UUID=aaaaaaaa-target-root\t/\text4\tdefaults\t0\t1\n")
    # the new disk's data filesystem is mounted under the target root, as an installer would do
    (target / "data").mkdir()
    subprocess.run(["mount", "--bind", str(ext4.mount), str(target / "data")], check=True)
    try:
        uuid = subprocess.run(
            ["blkid", "-p", "-o", "value", "-s", "UUID", ext4.device],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        options = RestoreOptions(target_root=target, fix_fstab=True, install_packages=False)
        component = SystemState()
        plan = component.plan(view, options)
        (action,) = plan.of("replace", "fstab")
        assert "/: UUID=11111111-2222-3333-4444-555555555555 -> UUID=aaaaaaaa-target-root" in action.reason
        assert f"/data: UUID=66666666-7777-8888-9999-000000000000 -> UUID={uuid}" in action.reason
        component.apply(plan, view, options)
    finally:
        subprocess.run(["umount", str(target / "data")], check=True)
    text = (target / "etc/fstab").read_text()
    assert "UUID=aaaaaaaa-target-root\t/\text4\terrors=remount-ro\t0\t1" in text
    assert f"UUID={uuid}\t/data\txfs\tdefaults\t0\t2" in text
    assert "tmpfs\t/scratch\ttmpfs\tsize=64m" in text
    assert "hello" not in installed_names(target)  # --no-packages


def test_item_selection_touches_only_the_items(
    source_machine: Path, fresh_target: Path, tmp_path: Path
) -> None:
    view = _collect(source_machine, tmp_path / "staging")
    target = fresh_target
    passwd = (target / "etc/passwd").read_text()
    options = RestoreOptions(target_root=target, includes=["/etc/probe-app.conf", "/etc/systemd/system"])
    component = SystemState()
    plan = component.plan(view, options)
    assert plan.targets("create", "file") == {"/etc/probe-app.conf", "/etc/systemd/system/probe-app.service"}
    assert {"accounts", "packages", "units"} <= plan.targets("leave")
    component.apply(plan, view, options)
    assert (target / "etc/probe-app.conf").read_text() == "greeting=from the source machine\n"
    assert (target / "etc/passwd").read_text() == passwd
    assert (target / "etc/hostname").read_text() != "sourcebox\n"
    assert "hello" not in installed_names(target)


def test_a_failed_package_step_is_reported_and_the_rest_is_done(
    source_machine: Path, fresh_target: Path, tmp_path: Path
) -> None:
    staging = tmp_path / "staging"
    view = _collect(source_machine, staging)
    doc_path = staging / ".shadowvault-components/system-state/packages.json"
    doc = json.loads(doc_path.read_text())
    doc["packages"].append({"name": "shadowvault-no-such-package", "version": "1.0", "manual": True})
    doc_path.write_text(json.dumps(doc))
    options = RestoreOptions(target_root=fresh_target)
    component = SystemState()
    plan = component.apply(component.plan(view, options), view, options)
    ((what, why),) = plan.errors
    assert what == "packages" and "shadowvault-no-such-package" in why
    assert (fresh_target / "etc/systemd/system/multi-user.target.wants/probe-app.service").is_symlink()
    assert (fresh_target / "etc/hostname").read_text() == "sourcebox\n"
    assert not (fresh_target / "usr/sbin/policy-rc.d").exists()
