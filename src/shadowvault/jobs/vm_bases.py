"""What an incremental VM backup builds on: for each disk, the last snapshot that holds it.

A backup with `--vm-disk` holds only the disks it chose, so the latest snapshot of a VM is not the
base of every disk: after `vm backup web01 --vm-disk vdb`, disk vda's base is still the snapshot
before, and its bitmap (named for that snapshot's point in time, vm/bitmaps.py) still records
every write since. Each disk therefore builds on the newest snapshot that holds it. The walk goes
back through snapshots that chose disks and stops at the first one that took them all: a disk
not in that one was not a disk the host could back up then, and its next copy is a full one.
The walk reads at most WALK_LIMIT snapshots (a disk left out of that many is copied in full).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from shadowvault.errors import ShadowvaultError
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.vm import layout
from shadowvault.vm.disks import DiskBase

log = logging.getLogger(__name__)

WALK_LIMIT = 64  # snapshots of the VM read to find every disk's base


@dataclass
class VmBases:
    """Per disk: the base the writer may copy incrementally from, its chunks and its snapshot."""

    latest: str | None = None  # the VM's newest snapshot on this host (the new snapshot's parent)
    disks: dict[str, DiskBase] = field(default_factory=dict)
    chunks: dict[str, list[bytes]] = field(default_factory=dict)
    snapshots: dict[str, str] = field(default_factory=dict)


def history(repo: Repository, vm: str, host: str, before: str | None = None) -> list[tuple[str, Snapshot]]:
    """The snapshots of `vm` taken on `host`, newest first, at most WALK_LIMIT of them: only those
    older than snapshot `before` when it is given. Both walks (a backup's bases, the disks a
    whole-VM restore takes from earlier snapshots, jobs/vm_sources.py) go through these."""
    wanted = [layout.snapshot_path(vm)]
    mine = [(i, s) for i, s in repo.list_snapshots() if s.paths == wanted and s.host == host]
    if before is not None:
        ids = [i for i, _ in mine]
        mine = mine[: ids.index(before)] if before in ids else []
    return list(reversed(mine[-WALK_LIMIT:]))


def find_bases(repo: Repository, vm: str, warn: Callable[[str], None]) -> VmBases:
    """The base of each disk of `vm` among this host's snapshots of it; a snapshot that cannot be
    read ends the walk with a warning (the disks not found yet get a full copy)."""
    bases = VmBases()
    for snapshot_id, snapshot in history(repo, vm, socket.gethostname()):
        bases.latest = bases.latest or snapshot_id
        try:
            definition, nodes = layout.read_vm(repo.load_tree, repo.load_blob, snapshot.tree, vm)
        except ShadowvaultError as err:
            warn(f"backup {snapshot_id[:8]} of VM {vm} cannot be a base ({err}); its disks get a full copy")
            break
        for disk in definition.disks:
            if disk.disk in bases.disks or not disk.bitmap or disk.disk not in nodes:
                continue
            bases.disks[disk.disk] = DiskBase(
                bitmap=disk.bitmap, virtual_size=disk.virtual_size, chunk_size=disk.chunk_size
            )
            bases.chunks[disk.disk] = list(nodes[disk.disk].content)
            bases.snapshots[disk.disk] = snapshot_id
        if not definition.chosen:
            break
    log.debug("VM %s: bases %s", vm, bases.snapshots)
    return bases
