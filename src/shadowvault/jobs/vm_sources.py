"""Where each disk of a VM restore comes from: the snapshot asked for, or for a whole VM an earlier one.

A backup with `--vm-disk` holds only the disks it chose; its `definition.json` names the others
(`left_out`). Restoring the whole VM from such a snapshot must not hand back a machine whose other
disks are silently missing, so each disk left out is taken from the newest earlier snapshot of the
VM (same host) that holds it, found the way a backup finds its bases (jobs/vm_bases.py: back to
the first snapshot that took every disk, at most WALK_LIMIT snapshots). The disks' points in time
then differ, so every source carries its snapshot and time for the restore to report. A disk that
no snapshot holds makes the restore refuse, naming it and the `--disk` restore that is possible:
no VM is better than one that boots without a disk. A restore of named disks (`--disk`) takes them
from the snapshot asked for only.

Snapshots made before `left_out` was recorded do not say which disks were left out: for them the
walk takes every disk of the earlier snapshots down to the first one that took every disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from shadowvault.errors import NotFoundError, UsageError
from shadowvault.jobs.vm_bases import history
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.vm import layout


@dataclass(frozen=True)
class DiskSource:
    """One disk to restore: as stored, its chunks, and the snapshot (id, time) that holds it."""

    disk: layout.StoredDisk
    content: list[bytes]
    snapshot_id: str
    time: float


def disk_sources(
    repo: Repository, vm: str, snapshot_id: str, snapshot: Snapshot, disks: list[str] | None = None
) -> tuple[layout.VmDefinition, list[DiskSource]]:
    """The VM's definition in `snapshot` and the disks to restore: `disks` from it, or when none are
    named, every disk of the VM (those it left out from earlier snapshots)."""
    definition, nodes = layout.read_vm(repo.load_tree, repo.load_blob, snapshot.tree, vm)
    here = {
        d.disk: DiskSource(d, list(nodes[d.disk].content), snapshot_id, snapshot.time)
        for d in definition.disks
        if d.disk in nodes
    }
    if disks:
        unknown = [d for d in disks if d not in here]
        if unknown:
            raise UsageError(
                f"VM {vm} has no disk {', '.join(unknown)} in this snapshot (disks: {', '.join(here)})"
            )
        return definition, [here[d] for d in here if d in disks]
    if not definition.chosen:  # it took every disk the host could capture
        return definition, list(here.values())
    return definition, _complete(repo, vm, snapshot_id, snapshot, definition, here)


def _complete(
    repo: Repository,
    vm: str,
    snapshot_id: str,
    snapshot: Snapshot,
    definition: layout.VmDefinition,
    sources: dict[str, DiskSource],
) -> list[DiskSource]:
    """`sources` with the disks `definition` left out, each from the newest earlier snapshot holding it."""
    missing = [d for d in definition.left_out if d not in sources]
    legacy = not definition.left_out  # made before left_out was recorded: whatever the walk finds
    for older_id, older in history(repo, vm, snapshot.host, before=snapshot_id):
        if not missing and not legacy:
            break
        earlier, found = layout.read_vm(repo.load_tree, repo.load_blob, older.tree, vm)
        for disk in earlier.disks:
            wanted = disk.disk in missing or (legacy and disk.disk not in sources)
            if wanted and disk.disk in found:
                sources[disk.disk] = DiskSource(disk, list(found[disk.disk].content), older_id, older.time)
                if disk.disk in missing:
                    missing.remove(disk.disk)
        if not earlier.chosen:  # the first snapshot that took every disk: older ones are not this VM's disks
            break
    if missing:
        flags = " ".join(f"--disk {d}" for d in sources)
        raise NotFoundError(
            f"snapshot {snapshot_id[:8]} of VM {vm} does not hold disk {', '.join(missing)} and no earlier "
            f"snapshot does: restore the disks it holds with {flags}"
        )
    return list(sources.values())
