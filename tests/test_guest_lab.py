"""The guest lab itself: it boots, runs commands with their output and status, and has the project."""

from __future__ import annotations

import pytest

from tests.fixtures.guest_lab import GuestLab, shared_guest_lab_fixture

lab = shared_guest_lab_fixture()  # disk `blank`; the first module to use the guest may build its image
pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]


def test_a_command_returns_its_output_and_exit_status(lab: GuestLab) -> None:
    result = lab.run("echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_the_guest_runs_debians_kernel_with_device_mapper(lab: GuestLab) -> None:
    assert lab.check("uname -r").stdout.strip() == lab.image.kernel_release
    assert "Driver version" in lab.check("lvm version").stdout


def test_the_shared_project_imports_with_its_dependencies(lab: GuestLab) -> None:
    result = lab.check("python3 -c 'import shadowvault, msgspec, click; print(shadowvault.__file__)'")
    assert result.stdout.strip() == "/project/src/shadowvault/__init__.py"
    assert lab.sv("--help").returncode == 0


def test_the_project_is_shared_read_only(lab: GuestLab) -> None:
    result = lab.run("touch /project/should-not-exist")
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr


def test_a_blank_disk_takes_a_filesystem(lab: GuestLab) -> None:
    disk = lab.disk("blank")
    lab.check(f"mkfs.ext4 -q {disk} && mkdir -p /mnt/blank && mount {disk} /mnt/blank")
    lab.check("echo hello > /mnt/blank/f && sync")
    assert lab.check("cat /mnt/blank/f").stdout == "hello\n"
    lab.check("umount /mnt/blank")


def test_a_command_past_its_timeout_is_killed(lab: GuestLab) -> None:
    result = lab.run("sleep 30", timeout=1)
    assert result.returncode == 124
