"""The dirty bitmaps VM backups leave in QEMU: their names, whose they are, how many a disk keeps.

A bitmap records every write to one disk since the point in time of one backup, and the next
incremental backup of that disk copies only what it marks. An incremental that trusted a bitmap
started at another point in time (or on another disk) would miss changes, so a bitmap's name says
exactly which backup started it, and a snapshot records the name of each of its disks' bitmaps:

    sv-<owner>-<set id>-<disk>

- the set id is unique to the shadow set, that is to the point in time the snapshot holds;
- the disk is the drive the bitmap was started on (an image moved to another drive is not the
  disk that drive's snapshots hold, and its bitmap does not serve them);
- the owner is a digest of the repository's id: each repository keeps its own bitmap per disk, so
  two repositories backing up the same VM each stay incremental instead of dropping each other's.

A disk carries at most MAX_OWNERS repositories' bitmaps between backups; when a backup would add
one more, the bitmaps of the repositories that backed the disk up least recently are dropped
(their next backup of it is a full copy: slower, never wrong). Names with our `sv-` prefix that
have no owner were made by earlier versions (`sv-<set id>`): a snapshot naming one still uses it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

PREFIX = "sv-"
MAX_OWNERS = 4  # repositories whose bitmaps one disk keeps (QEMU updates each on every guest write)
_NAME = re.compile(r"^sv-(?P<owner>[0-9a-f]{8})-(?P<set_id>\d{8}T\d{6}-[0-9a-f]+)-(?P<disk>.+)$")


def owner_of_repository(repository_id: str) -> str:
    """The owner tag of a repository's bitmaps: short, and the same for every backup into it."""
    return hashlib.sha256(repository_id.encode()).hexdigest()[:8]


def bitmap_name(owner: str, set_id: str, disk: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{8}", owner):
        raise ValueError(f"not a bitmap owner tag: {owner!r}")
    return f"{PREFIX}{owner}-{set_id}-{disk}"


@dataclass(frozen=True)
class Named:
    """What a bitmap's name says (owner "" for a name of an earlier version)."""

    name: str
    owner: str = ""
    set_id: str = ""


def parse(name: str) -> Named | None:
    """What `name` says, or None for a bitmap that is not ours (no `sv-` prefix)."""
    if not name.startswith(PREFIX):
        return None
    match = _NAME.match(name)
    return Named(name, match["owner"], match["set_id"]) if match else Named(name)


def unwanted(names: Iterable[str], owner: str, keep: set[str]) -> tuple[list[str], list[str]]:
    """Of the bitmaps on one disk, (leftovers, evicted) for a backup into `owner`'s repository.

    Leftovers: bitmaps of `owner`, or of no owner, that are not in `keep` (the bitmaps the
    repository's snapshots name as bases): a dead requester's, or replaced ones. Evicted: the
    bitmaps of other repositories beyond the MAX_OWNERS - 1 that backed this disk up last, so
    that with this backup's own the disk carries at most MAX_OWNERS repositories' bitmaps. A name
    in `keep` is never removed."""
    leftovers: list[str] = []
    others: dict[str, list[Named]] = {}
    for name in names:
        named = parse(name)
        if named is None or name in keep:
            continue
        if named.owner in ("", owner):
            leftovers.append(name)
        else:
            others.setdefault(named.owner, []).append(named)
    # set ids sort by the time they were made: the owner whose newest bitmap is oldest goes first
    by_age = sorted(others.values(), key=lambda group: max(n.set_id for n in group), reverse=True)
    evicted = [n.name for group in by_age[MAX_OWNERS - 1 :] for n in group]
    return leftovers, evicted
