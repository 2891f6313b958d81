"""The loop-filesystem fixture itself: it mounts a real filesystem and leaves nothing behind."""

import subprocess

from tests.fixtures.loopfs import loop_filesystem


def test_loop_filesystem_mounts_and_cleans_up():
    for fstype in ("ext4", "xfs", "btrfs"):
        with loop_filesystem(fstype) as fs:
            assert fs.mount.is_mount()
            (fs.mount / "probe").write_text("x")
            device = fs.device
        assert not fs.mount.exists()
        listed = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
        assert f"{device}:" not in listed
