"""A VM restore that does not fit, or cannot write its target, says so in one line and writes nothing.

The disks are crafted (one 1 MiB chunk stored once, referenced many times: a big disk in a tiny
repository) and restored onto a 64 MiB ext4 made for the test, as a user would, through the CLI.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shadowvault.vm import known_images
from tests.fixtures.loopfs import LoopFs
from tests.vm.helpers import cli, new_repository
from tests.vm.test_hostile_vm_snapshots import craft, one_line_error

MIB = 1 << 20


def _vm_of(tmp_path: Path, mib: int, filename: str | None = None) -> Path:
    """A repository holding VM `web` with one disk vda of `mib` MiB of non-zero data."""
    repo = new_repository(tmp_path / "repo")
    try:
        chunk = b"\x5a" * MIB
        filenames = {"vda": filename} if filename else None
        craft(repo, ["qemu-system-x86_64"], {"vda": (mib * MIB, MIB, [chunk] * mib)}, filenames=filenames)
    finally:
        repo.close()
    return tmp_path / "repo"


def test_a_restore_bigger_than_the_free_space_is_refused_before_writing(tmp_path: Path, ext4: LoopFs) -> None:
    repo = _vm_of(tmp_path, 96)
    target = ext4.mount / "restored"
    done = cli("vm", "restore", "latest", "web", "--target", str(target), "--format", "raw", repo=repo)
    one_line_error(done, 1, "not enough space to restore VM web", str(ext4.mount))
    assert not target.exists()


def test_a_qcow2_restore_counts_the_raw_copy_it_is_converted_from(tmp_path: Path, ext4: LoopFs) -> None:
    """40 MiB fit as raw, not as raw + qcow2 at once: refused for qcow2 only, and raw restores."""
    repo = _vm_of(tmp_path, 40)
    target = ext4.mount / "restored"
    done = cli("vm", "restore", "latest", "web", "--target", str(target), repo=repo)
    one_line_error(done, 1, "not enough space to restore VM web", "raw copy")
    assert not target.exists()
    done = cli("vm", "restore", "latest", "web", "--target", str(target), "--format", "raw", repo=repo)
    assert done.returncode == 0, done.stderr
    assert (target / "vda.raw").stat().st_size == 40 * MIB


def test_in_place_counts_the_image_it_sets_aside(tmp_path: Path, ext4: LoopFs, private_dirs: Path) -> None:
    image = ext4.mount / "vda.raw"
    image.write_bytes(b"\x11" * 30 * MIB)
    known_images.remember("web", {"vda": str(image)})
    repo = _vm_of(tmp_path, 40, str(image))
    done = cli("vm", "restore", "latest", "web", "--in-place", repo=repo)
    one_line_error(done, 1, "not enough space to restore VM web")
    assert sorted(p.name for p in ext4.mount.iterdir() if p.name != "lost+found") == ["vda.raw"]
    assert image.read_bytes() == b"\x11" * 30 * MIB


def test_a_file_out_of_a_disk_too_big_for_the_scratch_directory_is_refused_before_writing(
    tmp_path: Path, ext4: LoopFs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--disk D --path P` lays the whole disk down in TMPDIR first: 96 MiB do not fit in 64 MiB."""
    repo = _vm_of(tmp_path, 96)
    monkeypatch.setenv("TMPDIR", str(ext4.mount))
    target = tmp_path / "files"
    done = cli(
        "vm",
        "restore",
        "latest",
        "web",
        "--disk",
        "vda",
        "--path",
        "/etc/hosts",
        "--target",
        str(target),
        repo=repo,
    )
    one_line_error(done, 1, "not enough space to copy /etc/hosts out of disk vda of VM web", str(ext4.mount))
    assert "nothing was written" in done.stderr
    assert [p.name for p in ext4.mount.iterdir() if p.name != "lost+found"] == []
    assert not target.exists()


def test_a_target_that_cannot_be_written_is_one_line(tmp_path: Path, ext4: LoopFs) -> None:
    repo = _vm_of(tmp_path, 2)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = cli("vm", "restore", "latest", "web", "--target", str(blocker / "sub"), repo=repo)
    one_line_error(done, 1, f"cannot write {blocker / 'sub'}")
    subprocess.run(["mount", "-o", "remount,ro", str(ext4.mount)], check=True, timeout=60)
    try:
        done = cli(
            "vm", "restore", "latest", "web", "--target", str(ext4.mount), "--format", "raw", repo=repo
        )
        one_line_error(done, 1, f"cannot write {ext4.mount / 'vda.raw'}", "Read-only file system")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(ext4.mount)], check=True, timeout=60)
