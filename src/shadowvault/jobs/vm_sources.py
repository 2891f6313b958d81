"""Where each disk of a VM restore comes from: the snapshot asked for, or for a whole VM an earlier one.

A backup with `--vm-disk` holds only the disks it chose; its `definition.json` names the others
(`left_out`). Restoring the whole VM from such a snapshot must not hand back a machine whose other
disks are silently missing, so each disk left out is taken from the newest earlier snapshot of the
VM (same host) that holds it, found the way a backup finds its bases (jobs/vm_bases.py: back to
the first snapshot that took every disk, at most WALK_LIMIT snapshots). The disks' points in time
then differ, so every source carries its snapshot and time for the restore to report. A disk that
no snapshot holds makes the restore refuse, naming it and the `--disk` restore that is possible:
no VM is better than one that boots without a disk. A restore of named disks (`--disk`, and
`--path` inside one) takes each from the snapshot asked for, or one it left out from the same
earlier snapshot a whole-VM restore would: the restore says so, with that snapshot and its time.

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
    """The VM's definition in `snapshot` and the disks to restore: `disks`, or when none are named
    every disk of the VM; those it left out from earlier snapshots."""
    definition, nodes = layout.read_vm(repo.load_tree, repo.load_blob, snapshot.tree, vm)
    here = {
        d.disk: DiskSource(d, list(nodes[d.disk].content), snapshot_id, snapshot.time)
        for d in definition.disks
        if d.disk in nodes
    }
    if disks:
        return definition, _named(repo, vm, snapshot_id, snapshot, definition, here, disks)
    if not definition.chosen:  # it took every disk the host could capture
        return definition, list(here.values())
    sources = dict(here)
    legacy = not definition.left_out  # made before left_out was recorded: whatever the walk finds
    wanted = [d for d in definition.left_out if d not in here]
    missing = _from_earlier(repo, vm, snapshot_id, snapshot, sources, wanted, take_any=legacy)
    if missing:
        raise _nowhere(vm, snapshot_id, missing, sources)
    return definition, list(sources.values())


def _named(
    repo: Repository,
    vm: str,
    snapshot_id: str,
    snapshot: Snapshot,
    definition: layout.VmDefinition,
    here: dict[str, DiskSource],
    disks: list[str],
) -> list[DiskSource]:
    """The disks named, each from `snapshot` or, when its backup left it out, from the newest
    earlier snapshot holding it (as a whole-VM restore takes it)."""
    legacy = bool(definition.chosen) and not definition.left_out
    elsewhere = [d for d in dict.fromkeys(disks) if d not in here]
    for disk in elsewhere:
        if disk in definition.excluded:
            raise UsageError(f"disk {disk} of VM {vm} was never backed up: {definition.excluded[disk]}")
        if disk not in definition.left_out and not legacy:
            raise _unknown(vm, [disk], here)
    earlier: dict[str, DiskSource] = {}
    missing = _from_earlier(repo, vm, snapshot_id, snapshot, earlier, elsewhere, take_any=False)
    if missing:
        if all(d in definition.left_out for d in missing):
            raise _nowhere(vm, snapshot_id, missing, here)
        raise _unknown(vm, missing, here)
    return [s for d, s in here.items() if d in disks] + [earlier[d] for d in elsewhere]


def _from_earlier(
    repo: Repository,
    vm: str,
    snapshot_id: str,
    snapshot: Snapshot,
    sources: dict[str, DiskSource],
    wanted: list[str],
    *,
    take_any: bool,
) -> list[str]:
    """Add to `sources` each disk of `wanted` (with `take_any`, every disk not in `sources` yet)
    from the newest earlier snapshot holding it; the disks of `wanted` none holds."""
    missing = list(wanted)
    for older_id, older in history(repo, vm, snapshot.host, before=snapshot_id):
        if not missing and not take_any:
            break
        earlier, found = layout.read_vm(repo.load_tree, repo.load_blob, older.tree, vm)
        for disk in earlier.disks:
            if (disk.disk in missing or (take_any and disk.disk not in sources)) and disk.disk in found:
                sources[disk.disk] = DiskSource(disk, list(found[disk.disk].content), older_id, older.time)
                if disk.disk in missing:
                    missing.remove(disk.disk)
        if not earlier.chosen:  # the first snapshot that took every disk: older ones are not this VM's disks
            break
    return missing


def _unknown(vm: str, disks: list[str], here: dict[str, DiskSource]) -> UsageError:
    return UsageError(f"VM {vm} has no disk {', '.join(disks)} in this snapshot (disks: {', '.join(here)})")


def _nowhere(
    vm: str, snapshot_id: str, missing: list[str], restorable: dict[str, DiskSource]
) -> NotFoundError:
    """A disk the VM had that neither the snapshot nor an earlier one holds, and what can be restored."""
    flags = " ".join(f"--disk {d}" for d in restorable)
    hint = f": restore the disks it holds with {flags}" if restorable else ""
    return NotFoundError(
        f"snapshot {snapshot_id[:8]} of VM {vm} does not hold disk {', '.join(missing)} and no earlier "
        f"snapshot does{hint}"
    )
