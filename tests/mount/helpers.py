"""A mounted view for tests: `shadowvault mount` in its own process, always unmounted and ended.

The view is unmounted with `fusermount -u` (lazily if a test left something open in it), and the
mount process is waited for and, if it does not end, killed by its PID.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from tests.archive.helpers import PASSWORD, archive, new_repo
from tests.fixtures.tools import require_root, require_tools

MOUNT_DEADLINE = 60.0  # seconds for the view to appear (opening the repository included)


def _unescape(field: str) -> str:
    """A mountinfo path: spaces, tabs, newlines and backslashes are octal escapes there."""
    return field.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "surrogateescape")


def mount_ids(path: Path) -> set[str]:
    """The ids of the mounts at `path` (a dead one included: its path cannot be resolved, so only
    its parent is)."""
    whole = os.path.abspath(path)
    target = os.path.join(os.path.realpath(os.path.dirname(whole)), os.path.basename(whole))
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as table:
        return {line.split()[0] for line in table if _unescape(line.split()[4]) == target}


def is_mounted(path: Path) -> bool:
    return bool(mount_ids(path))


def unmount(mountpoint: Path) -> None:
    """`fusermount -u`; lazily (`-z`) when something still holds the view open."""
    if not is_mounted(mountpoint):
        return
    done = subprocess.run(["fusermount", "-u", str(mountpoint)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and is_mounted(mountpoint):
        lazy = ["fusermount", "-u", "-z", str(mountpoint)]
        subprocess.run(lazy, capture_output=True, text=True, timeout=60)


@dataclass
class View:
    mountpoint: Path
    process: subprocess.Popen[bytes]
    stderr_path: Path
    mounts_before: set[str]  # mounts at the mount point before this view (a dead one, say)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def snapshot_root(self, name: str = "latest") -> Path:
        return self.mountpoint / "snapshots" / name


def mount_command(repo: Path, mountpoint: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "shadowvault.cli.launch",
        "mount",
        "--repo",
        str(repo),
        "--refresh-interval",
        "0",
        *args,
        str(mountpoint),
    ]


@contextmanager
def mounted_view(repo: Path, mountpoint: Path, *args: str, cwd: Path | None = None) -> Iterator[View]:
    """The repository's snapshots mounted at `mountpoint` for the duration of the block (`repo` and
    `mountpoint` may be relative to `cwd`)."""
    require_root()
    require_tools("fusermount")
    given, mountpoint = mountpoint, (cwd or Path.cwd()) / mountpoint
    try:
        mountpoint.mkdir(exist_ok=True)
    except OSError as err:
        if err.errno != errno.ENOTCONN:  # a dead mount is there: the test is about clearing it
            raise
    stderr_path = mountpoint.parent / f"{mountpoint.name}.stderr"
    env = {**os.environ, "SHADOWVAULT_PASSWORD": PASSWORD}
    before = mount_ids(mountpoint)
    with open(stderr_path, "wb") as stderr:
        command = mount_command(repo, given, *args)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=cwd)
    view = View(mountpoint, process, stderr_path, before)
    try:
        wait_until_mounted(view)
        yield view
    finally:
        unmount(mountpoint)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        unmount(mountpoint)  # a killed process leaves its mount behind


def has_mounted(view: View) -> bool:
    """A new mount at the mount point; or, where one was there before (a mount id may be reused
    once the old mount is gone), the view's line saying it is ready."""
    if mount_ids(view.mountpoint) - view.mounts_before:
        return True
    return bool(view.mounts_before) and "snapshots of " in view.stderr and is_mounted(view.mountpoint)


def wait_until_mounted(view: View) -> None:
    deadline = time.monotonic() + MOUNT_DEADLINE
    while not has_mounted(view):
        if view.process.poll() is not None:
            pytest.fail(f"the mount ended with {view.process.returncode}: {view.stderr}")
        if time.monotonic() > deadline:
            pytest.fail(f"not mounted after {MOUNT_DEADLINE:.0f} s: {view.stderr}")
        time.sleep(0.05)


def one_file_repository(base: Path) -> Path:
    """`base/src` holding one file `f` (b"data"), and `base/repo` with one snapshot of it; the source."""
    src = base / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    with new_repo(base / "repo") as repo:
        save_snapshot(repo, src)
    return src


def save_snapshot(
    repo: Repository,
    src: Path,
    *,
    host: str = "web1",
    tags: tuple[str, ...] = (),
    when: float | None = None,
) -> str:
    """Back `src` up (under its absolute path) and store a snapshot of it; returns the snapshot id."""
    root, stats = archive(repo, src)
    assert stats.errors == []
    snapshot = Snapshot(
        time=time.time() if when is None else when, host=host, paths=[str(src)], tags=list(tags), tree=root
    )
    return repo.save_snapshot(snapshot)


def in_view(snapshot_root: Path, src: Path) -> Path:
    """Where `src` (backed up under its absolute path) is in a snapshot's directory of the view."""
    return snapshot_root / str(src).lstrip("/")
