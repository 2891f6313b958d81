"""A `shadowvault mount` killed with SIGKILL cannot unmount: its mount point is left answering
"Transport endpoint is not connected". Mounting there again clears it and serves the view."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.archive.helpers import PASSWORD, new_repo
from tests.fixtures.tools import require_root, require_tools
from tests.mount.helpers import (
    MOUNT_DEADLINE,
    in_view,
    is_mounted,
    mount_command,
    mount_ids,
    mounted_view,
    one_file_repository,
)


def test_mounting_over_a_killed_mount_clears_it_and_reads(tmp_path: Path):
    src = one_file_repository(tmp_path)
    mountpoint = tmp_path / "mnt"
    with mounted_view(tmp_path / "repo", mountpoint) as killed:
        assert (in_view(killed.snapshot_root(), src) / "f").read_bytes() == b"data"
        killed.process.send_signal(signal.SIGKILL)
        killed.process.wait(timeout=60)
        with pytest.raises(OSError) as dead:
            os.listdir(mountpoint)
        assert dead.value.errno == errno.ENOTCONN and is_mounted(mountpoint)

        with mounted_view(tmp_path / "repo", mountpoint) as again:
            assert (in_view(again.snapshot_root(), src) / "f").read_bytes() == b"data"
        assert again.process.returncode == 0, again.stderr
        assert again.stderr.splitlines()[0] == (
            f"{mountpoint} held the dead mount of a `shadowvault mount` that was killed: unmounted it"
        )
        assert not is_mounted(mountpoint)
        assert os.path.isdir(mountpoint), "the directory under the dead mount is back"


def test_a_dead_mount_of_another_filesystem_is_left_alone(tmp_path: Path, cli):
    """Not ours: one line naming the way out, and the mount is still there."""
    require_root()
    require_tools("fusermount")
    mountpoint = tmp_path / "other"
    mountpoint.mkdir()
    # A FUSE filesystem that is not ours (an empty one named "otherfs"), then killed.
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import mfusepy, sys; mfusepy.FUSE(mfusepy.Operations(), sys.argv[1], foreground=True,"
            " fsname='otherfs', subtype='otherfs')",
            str(mountpoint),
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + MOUNT_DEADLINE
        while not is_mounted(mountpoint) and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert is_mounted(mountpoint), "the other filesystem did not mount"
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=60)
        env = {"SHADOWVAULT_PASSWORD": PASSWORD}
        with new_repo(tmp_path / "repo"):
            pass
        refused = cli(*mount_command(tmp_path / "repo", mountpoint)[3:], env=env)
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines() == [
            f"shadowvault: error: {mountpoint}: a dead FUSE mount (fuse.otherfs) is in the way: "
            f"`fusermount -u {mountpoint}` unmounts it"
        ]
        assert is_mounted(mountpoint)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        subprocess.run(["fusermount", "-u", "-z", str(mountpoint)], capture_output=True, timeout=60)


def test_mounting_over_a_live_view_is_refused(tmp_path: Path, cli):
    """A second view would stack on the first silently: one line says to unmount it first."""
    src = one_file_repository(tmp_path)
    mountpoint = tmp_path / "mnt"
    with mounted_view(tmp_path / "repo", mountpoint) as live:
        mounts = mount_ids(mountpoint)
        refused = cli(
            *mount_command(tmp_path / "repo", mountpoint)[3:], env={"SHADOWVAULT_PASSWORD": "never asked"}
        )
        assert refused.returncode == 2
        assert refused.stderr.splitlines() == [
            f"shadowvault: error: {mountpoint} is already a mount (fuse.shadowvault): "
            f"`fusermount -u {mountpoint}` first"
        ]
        assert mount_ids(mountpoint) == mounts  # nothing stacked on it
        assert (in_view(live.snapshot_root(), src) / "f").read_bytes() == b"data"
