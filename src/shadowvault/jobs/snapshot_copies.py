"""Other tools' btrfs snapshots below the paths of a backup: left out unless asked for.

snapper keeps read-only snapshots of `/` in `/.snapshots/N/snapshot`, and other tools keep theirs
inside the volumes they protect. Each is a whole copy of a tree the backup reads anyway: walking
them hashes the same files once per snapshot (fifty snapper snapshots, a backup fifty times as
long) for nothing the repository does not already hold. As VSS keeps its shadow storage out of
every backup (FilesNotToBackup), a read-only snapshot of another subvolume is recorded as an empty
directory, said in one warning and noted in the manifest; `--include-snapshots` reads them.
Writable subvolumes (systemd's machines, docker's) and read-only ones made as such are data: read.
The shadow set takes no image of what is left out (the plan's ReadScope: shadowing.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from shadowvault.paths_within import is_within
from shadowvault.shadow.providers.base import SHADOW_DIR_NAME
from shadowvault.shadow.providers.btrfs_ioctl import is_snapshot_copy
from shadowvault.shadow.providers.btrfs_nested import reachable_nested
from shadowvault.shadow.volumes import Volume

log = logging.getLogger(__name__)
NAMED_IN_NOTE = 3  # the note names this many and counts the rest


def subvolumes_below(paths: list[str], volumes: list[Volume]) -> list[str]:
    """Nested btrfs subvolumes strictly below `paths` (absolute, sorted: parents first), on the
    volumes that hold or lie within them; only those reached through their volume's mount (a tmpfs
    over one's directory or a mount at its place does not hide the others: btrfs_nested.py)."""
    found: set[str] = set()
    for volume in volumes:
        mount = volume.mount_point
        if volume.fstype != "btrfs" or f"/{SHADOW_DIR_NAME}/" in f"{mount}/":
            continue
        if not any(is_within(mount, p) or is_within(p, mount) for p in paths):
            continue
        found.update(s for s in _subvolumes(mount) if any(is_within(s, p) and s != p for p in paths))
    return sorted(found)


def snapshot_copies(
    subvolumes: list[str], left_out: Callable[[str], bool] = lambda _path: False
) -> list[str]:
    """Read-only snapshots of other subvolumes among `subvolumes` (subvolumes_below; outermost only,
    sorted), but for those `left_out` (excluded: not named)."""
    found: list[str] = []
    for subvolume in sorted(subvolumes):
        if left_out(subvolume) or any(is_within(subvolume, outer) for outer in found):
            continue
        try:
            if is_snapshot_copy(subvolume):
                found.append(subvolume)
        except OSError as err:
            log.debug("cannot read what subvolume %s is: %s", subvolume, err)
    return found


def _subvolumes(mount: str) -> list[str]:
    """Absolute paths of the subvolumes nested in the mounted one; [] when they cannot be listed
    (listing needs root: a user's backup reads what it can, as before)."""
    try:
        return [os.path.join(mount, rel) for rel in reachable_nested(mount)]
    except OSError as err:
        log.debug("cannot list the subvolumes of %s: %s", mount, err)
        return []


def snapshot_copies_note(copies: list[str]) -> str:
    """The one warning (and manifest note) for the snapshots left out."""
    named = ", ".join(copies[:NAMED_IN_NOTE])
    more = f" and {len(copies) - NAMED_IN_NOTE} more" if len(copies) > NAMED_IN_NOTE else ""
    if len(copies) == 1:
        count, them = "1 read-only btrfs snapshot", "it"
    else:
        count, them = f"{len(copies)} read-only btrfs snapshots", "them"
    return (
        f"{count} below the backed-up paths not read, as another tool's history ({named}{more}); "
        f"--include-snapshots reads {them}"
    )
