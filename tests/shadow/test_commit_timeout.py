"""A provider that overruns its commit limit: the set aborts, the commit is cancelled, no image survives.

The providers here are the real btrfs and reflink providers, slowed on purpose by a subclass: the
images they make (a btrfs subvolume, a reflink copy on XFS) are real, and so is their removal.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from shadowvault.errors import ShadowError
from shadowvault.shadow.coordinator import SetOptions, create_shadow_set
from shadowvault.shadow.manifest import Shadow
from shadowvault.shadow.providers.base import WHOLE_VOLUMES, ReadScope
from shadowvault.shadow.providers.btrfs import BtrfsProvider
from shadowvault.shadow.providers.reflink import ReflinkProvider
from shadowvault.shadow.providers.tree_copy import TreeCopier
from shadowvault.shadow.store import ShadowStore
from shadowvault.shadow.volumes import Volume
from tests.shadow.frozen_probe import write_completes
from tests.shadow.test_orphans import ours

HOLD_LIMIT = 120.0  # a slowed commit never waits longer than this for its cancel (a safety net)
STOPPING = 0.5  # what the slowed providers take to stop once cancelled (a real copy stops within a few files)


class SlowBtrfs(BtrfsProvider):
    """Takes its snapshot, then hangs (a slow storage layer) until it is cancelled; returns the snapshot."""

    name = "btrfs"

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    def create(self, volume: Volume, set_id: str, index: int, scope: ReadScope = WHOLE_VOLUMES) -> Shadow:
        shadow = super().create(volume, set_id, index, scope)
        self.cancelled.wait(HOLD_LIMIT)
        time.sleep(STOPPING)
        return shadow


class SlowCopier(TreeCopier):
    """A reflink copy that takes its time over each file."""

    def _clone_file(self, src: str, dst: str, st: os.stat_result) -> None:
        super()._clone_file(src, dst, st)
        time.sleep(STOPPING)


class SlowReflink(ReflinkProvider):
    copier = SlowCopier


def fill(mount: Path, files: int) -> None:
    for n in range(files):
        (mount / f"file-{n}").write_bytes(os.urandom(4096))


def copies(mount: Path) -> list[str]:
    """Whatever is in the reflink provider's directory: whole copies and half-made ones."""
    hidden = mount / ".shadowvault"
    return sorted(os.listdir(hidden)) if hidden.is_dir() else []


def test_a_btrfs_snapshot_made_by_a_commit_past_its_limit_does_not_outlive_the_set(btrfs):
    with pytest.raises(ShadowError, match=r"provider btrfs timed out at commit on .* after 1\.0 s") as caught:
        create_shadow_set([str(btrfs.mount)], SetOptions(provider=SlowBtrfs(), commit_timeout=1.0))
    assert caught.value.manifest.state == "aborted"
    assert ours(btrfs.mount) == []
    assert ShadowStore().list() == []
    assert write_completes(btrfs.mount)


def test_a_reflink_copy_cut_short_by_the_commit_limit_leaves_nothing(xfs):
    fill(xfs.mount, 40)
    with pytest.raises(ShadowError, match=r"provider reflink timed out at commit on .* after 1\.0 s"):
        create_shadow_set([str(xfs.mount)], SetOptions(provider=SlowReflink(), commit_timeout=1.0))
    assert copies(xfs.mount) == []
    assert ShadowStore().list() == []
    assert all((xfs.mount / f"file-{n}").is_file() for n in range(40))
