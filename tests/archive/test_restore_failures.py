"""When things go wrong: damaged packs, unreadable source files, interrupted restores, existing files."""

from __future__ import annotations

import json
import mmap
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shadowvault.archive.restore import find_node
from shadowvault.repo.pack import pack_name
from shadowvault.repo.repository import Repository
from tests.archive.helpers import PASSWORD, files_being_written
from tests.fixtures.loopfs import loop_filesystem, unmount_tree


def open_repo(env: dict[str, str]) -> Repository:
    return Repository.open(env["SHADOWVAULT_REPOSITORY"], PASSWORD)


def test_flipped_byte_in_a_pack_fails_only_that_file(ext4, cli, env):
    src = ext4.mount / "src"
    src.mkdir()
    (src / "damaged").write_bytes(os.urandom(200_000))
    (src / "fine").write_bytes(os.urandom(300_000))
    (src / "small").write_text("small file")
    assert cli("backup", "--provider", "none", src, env=env).returncode == 0
    with open_repo(env) as repo:
        _, snap = repo.find_snapshot("latest")
        node = find_node(repo, snap.tree, f"{src}/damaged")
        location = repo.lookup(node.content[0])
    pack = Path(env["SHADOWVAULT_REPOSITORY"]) / pack_name(location.pack)
    os.chmod(pack, 0o600)
    with open(pack, "r+b") as f:
        f.seek(location.offset + location.length // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))

    target = ext4.mount / "restored"
    done = cli("restore", "latest", "--target", target, "--json", env=env)
    assert done.returncode == 3, done.stderr
    errors = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [e["path"] for e in errors if e["message_type"] == "error"] == [f"{src}/damaged"]
    restored = target / str(src).lstrip("/")
    assert (restored / "fine").read_bytes() == (src / "fine").read_bytes()
    assert (restored / "small").read_text() == "small file"
    assert sorted(os.listdir(restored)) == ["fine", "small"], "no damaged or temporary file left behind"


def test_overwrite_modes(ext4, cli, env):
    src = ext4.mount / "src"
    src.mkdir()
    (src / "old-in-target").write_text("from snapshot")
    (src / "new-in-target").write_text("from snapshot")
    os.utime(src / "new-in-target", (1_000_000_000, 1_000_000_000))
    os.utime(src / "old-in-target", (1_500_000_000, 1_500_000_000))
    assert cli("backup", "--provider", "none", src, env=env).returncode == 0

    def prepare(name: str) -> Path:
        target = ext4.mount / name
        for file, mtime in (("old-in-target", 1_000_000_000), ("new-in-target", 1_500_000_000)):
            (target / file).parent.mkdir(parents=True, exist_ok=True)
            (target / file).write_text("in target")
            os.utime(target / file, (mtime, mtime))
        return target

    expected = {
        "never": ("in target", "in target"),
        "if-newer": ("from snapshot", "in target"),
        "always": ("from snapshot", "from snapshot"),
    }
    for mode, (old_content, new_content) in expected.items():
        target = prepare(mode)
        done = cli("restore", f"latest:{src}", "--target", target, "--overwrite", mode, env=env)
        assert done.returncode == 0, done.stderr
        assert (target / "old-in-target").read_text() == old_content, mode
        assert (target / "new-in-target").read_text() == new_content, mode


@pytest.fixture
def big_ext4():
    with loop_filesystem("ext4", size=1 << 30) as fs:
        yield fs


def test_interrupted_restore_leaves_no_partial_file_under_its_name(big_ext4, cli, env):
    src = big_ext4.mount / "src"
    src.mkdir()
    (src / "done-first").write_text("small")
    with open(src / "zz-big", "wb") as f:
        for _ in range(192):
            f.write(os.urandom(1 << 20))
    assert cli("backup", "--provider", "none", src, env=env).returncode == 0

    target = dest = big_ext4.mount / "restored"  # SNAP:SUBPATH restores what is inside SUBPATH
    proc = subprocess.Popen(
        [sys.executable, "-m", "shadowvault.cli.launch", "restore", f"latest:{src}", "--target", str(target)],
        env={**os.environ, **env},
    )
    killed_with_partial = False
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if any(size > (8 << 20) for size in files_being_written(proc.pid, dest)):
                os.kill(proc.pid, signal.SIGKILL)
                killed_with_partial = True
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_with_partial, f"the restore finished before it could be interrupted ({proc.returncode})"
    assert not (dest / "zz-big").exists(), "a partial file is visible under its final name"
    assert [p.name for p in dest.iterdir() if not p.name.startswith(".svtmp-")] in ([], ["done-first"])

    done = cli("restore", f"latest:{src}", "--target", target, "--verify", env=env)
    assert done.returncode == 0, done.stderr
    assert os.path.getsize(dest / "zz-big") == 192 << 20


def _corrupt_file_data(fs, path: Path, marker: bytes) -> None:
    """Flip a byte of `path`'s data extent on the device so that btrfs's checksum fails (EIO)."""
    os.sync()
    unmount_tree(fs.mount)
    with open(fs.image, "r+b") as f, mmap.mmap(f.fileno(), 0) as image:
        # every copy of the data on the device: a stale copy of the extent (written first, then
        # moved) can come before the live one, and flipping only that one left the file readable
        at = image.find(marker)
        assert at >= 0, "data extent not found in the image"
        while at >= 0:
            image[at + 10] ^= 0xFF
            at = image.find(marker, at + len(marker))
        image.flush()
    subprocess.run(["mount", fs.device, str(fs.mount)], check=True, capture_output=True)
    # an unmount that had to be lazy (the mount was busy) leaves the filesystem alive, and the new
    # mount then reads the file's old pages from memory: drop them so the read goes to the device
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    with pytest.raises(OSError):
        path.read_bytes()


def test_unreadable_file_is_reported_and_the_rest_saved(btrfs, cli, env):
    """A file whose data fails btrfs's checksum (EIO): reported, exit 3, every other file is saved."""
    src = btrfs.mount / "src"
    src.mkdir()
    marker = b"SHADOWVAULT-UNREADABLE-" + os.urandom(16).hex().encode()
    broken = Path(os.fsdecode(os.fsencode(src) + b"/broken-\xff"))  # a name that is not UTF-8
    broken.write_bytes((marker * 4096)[: 128 << 10])
    (src / "good").write_bytes(b"good data " * 1000)
    _corrupt_file_data(btrfs, broken, marker)

    done = cli("backup", "--json", btrfs.mount, env=env)
    assert done.returncode == 3, done.stderr
    summary = next(json.loads(line) for line in done.stdout.splitlines() if '"summary"' in line)
    assert summary["errors"] == 1
    errors = [
        json.loads(line) for line in done.stderr.splitlines() if line.startswith('{"message_type":"error"')
    ]
    assert [e["path"] for e in errors] == [f"{src}/broken-\\xff"]

    target = btrfs.mount.parent / "restored"
    done = cli("restore", "latest", "--target", target, env=env)
    assert done.returncode == 0, done.stderr
    restored = target / str(src).lstrip("/")
    assert (restored / "good").read_bytes() == b"good data " * 1000
    assert os.listdir(restored) == ["good"]
    assert "not restored: not read at backup" in done.stderr


@pytest.mark.parametrize("mode", ["always", "if-newer"])
def test_a_directory_in_the_way_of_a_file_is_an_error_not_a_silent_skip(ext4, cli, env, mode):
    """The file is not restored (a directory is never replaced by a file): exit 3, the path is named."""
    src = ext4.mount / "src"
    src.mkdir()
    (src / "blocked").write_text("from snapshot")
    (src / "fine").write_text("fine")
    os.utime(src / "blocked", (2_000_000_000, 2_000_000_000))  # newer than the directory in the target
    assert cli("backup", "--provider", "none", src, env=env).returncode == 0

    for as_json in (True, False):
        target = ext4.mount / f"target-{as_json}"
        (target / "blocked").mkdir(parents=True)
        (target / "blocked" / "keep").write_text("mine")
        args = ["restore", f"latest:{src}", "--target", target, "--overwrite", mode]
        done = cli(*args, *(["--json"] if as_json else []), env=env)
        assert done.returncode == 3, done.stderr
        assert (target / "blocked" / "keep").read_text() == "mine"
        assert (target / "fine").read_text() == "fine"
        if as_json:
            messages = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
            errors = [m for m in messages if m["message_type"] == "error"]
            assert [e["path"] for e in errors] == [f"{src}/blocked"]
            assert "a directory is in the way" in errors[0]["message"]
            summary = next(json.loads(line) for line in done.stdout.splitlines() if '"summary"' in line)
            assert (summary["errors"], summary["files"]) == (1, 1)
        else:
            assert f"{target}/blocked: not restored: a directory is in the way" in done.stderr  # its place
            assert "Traceback" not in done.stderr
