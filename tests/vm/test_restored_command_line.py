"""The restored command line names the restored images, whatever form the original named them in.

A VM started with the older options (`-hda`, `-cdrom`, `-pflash`) had its restored NAME.sh (and
`--verify-boot`'s boot) still naming the original images: the restore booted and verified the
wrong disks. Each snapshot here is crafted (tests/vm/test_hostile_vm_snapshots.py) and restored
through the CLI as a user would; the user reads NAME.sh and NAME.json.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from tests.vm.helpers import cli, new_repository
from tests.vm.test_hostile_vm_snapshots import craft, one_line_error

ONE = (4096, 4096, [b"\x01" * 4096])


def _snapshot(tmp_path: Path, argv: list[str], disks: list[str]) -> Path:
    repo = new_repository(tmp_path / "repo")
    try:
        craft(repo, argv, {disk: ONE for disk in disks})  # disk i's image is /nonexistent/i.raw
    finally:
        repo.close()
    return tmp_path / "repo"


def test_hda_cdrom_and_pflash_name_the_restored_images(tmp_path: Path) -> None:
    argv = ["qemu-system-x86_64", "-hda", "/nonexistent/0.raw", "-cdrom", "/nonexistent/1.raw"]
    argv += ["-pflash", "/nonexistent/2.raw"]
    repo = _snapshot(tmp_path, argv, ["hda", "cd0", "flash0"])
    target = tmp_path / "target"
    done = cli("vm", "restore", "latest", "web", "--target", str(target), "--format", "raw", repo=repo)
    assert done.returncode == 0, done.stderr
    started = shlex.split((target / "web.sh").read_text().splitlines()[-1])[1:]  # after `exec`
    expected = ["qemu-system-x86_64", "-hda", f"{target}/hda.raw", "-cdrom", f"{target}/cd0.raw"]
    expected += ["-pflash", f"{target}/flash0.raw"]
    assert started == expected
    assert json.loads((target / "web.json").read_text())["argv"] == expected


def test_verify_boot_refuses_a_command_line_that_would_boot_the_original_image(tmp_path: Path) -> None:
    """A JSON -blockdev is not rewritten: the boot would open the original image, not the restored
    one, so it is refused before the restore writes a byte."""
    node = {"driver": "file", "filename": "/nonexistent/0.raw", "node-name": "f0"}
    repo = _snapshot(tmp_path, ["qemu-system-x86_64", "-blockdev", json.dumps(node)], ["vda"])
    target = tmp_path / "target"
    done = cli("vm", "restore", "latest", "web", "--target", str(target), "--verify-boot", repo=repo)
    one_line_error(done, 2, "--verify-boot would not boot the restored VM", "/nonexistent/0.raw")
    assert not target.exists() or not list(target.iterdir())
