"""Which nested subvolumes of a btrfs volume are there to read, and which of them a requester reads.

The listing is shared by the provider (what it snapshots beside the volume's image) and by the
backup's plan (`jobs/snapshot_copies.py`: which of them are other tools' snapshots), so that both
see the same subvolumes and fail the same way. A subvolume below another mount (a tmpfs over its
directory, a subvolume mounted at its own place) is not reached through this volume: listing below
it would open the other filesystem, fail (ENOENT, ENOTTY) and lose every subvolume of the volume.

The selection keeps a backup of one directory from snapshotting every nested subvolume of the
volume (hundreds under docker's /var/lib/docker/btrfs/subvolumes or snapper's /.snapshots).
"""

from __future__ import annotations

import os

from shadowvault.paths_within import innermost, is_within
from shadowvault.shadow.providers.base import SHADOW_DIR_NAME, ReadScope
from shadowvault.shadow.providers.btrfs_ioctl import nested_subvolume_tree
from shadowvault.shadow.providers.hidden_dir import mounts_within


def reachable_nested(mount_point: str) -> list[str]:
    """Subvolumes nested in the one mounted at `mount_point` (relative, parents first), but for our
    own snapshots and those a mount covers; OSError when they cannot be listed (it needs root)."""
    covered = [os.path.relpath(m, mount_point) for m in mounts_within(mount_point) if m != mount_point]
    return nested_subvolume_tree(mount_point, skip=SHADOW_DIR_NAME, hidden=covered)


def nested_in_scope(mount_point: str, nested: list[str], scope: ReadScope) -> list[str]:
    """Those of `nested` (relative to `mount_point`, order kept) the requester reads: each at or below
    a path read, and the innermost one holding a path read (that path is read in its image), but none
    at or below a path left out. Every one when no path read touches the volume or one holds it whole."""
    absolute = {rel: os.path.join(mount_point, rel) for rel in nested}
    paths = [p for p in scope.paths if is_within(p, mount_point) or is_within(mount_point, p)]
    if not paths or any(is_within(mount_point, p) for p in paths):
        below = set(nested)
        holders: set[str] = set()
    else:
        below = {rel for rel, path in absolute.items() if any(is_within(path, p) for p in paths)}
        by_path = {path: rel for rel, path in absolute.items()}
        holders = {by_path[h] for p in paths if (h := innermost(p, by_path)) is not None}
    return [
        rel
        for rel in nested
        if rel in holders
        or (rel in below and not any(is_within(absolute[rel], out) for out in scope.left_out))
    ]
