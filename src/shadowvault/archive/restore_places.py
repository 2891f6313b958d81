"""Where in the target a restore lays down a snapshot path: what a user looks at after a restore.

A restore reports what it kept, warned about and failed by snapshot path (`RestoreStats`); a user
looks in the target, as `restore --dry-run` shows it (restore_preview.py). The target directory
stands for one snapshot directory (`top`): the snapshot's root for a whole-snapshot restore, SUBPATH
for `SNAP:SUBPATH`, the file's directory for a single file. Every entry's place is the target plus
its path below `top`, so the place is derived when shown, never stored: a restore that keeps a
million files holds one string per file, not two.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class TargetPlaces:
    """The target directory (as the user named it) and the snapshot directory it stands for."""

    target: str
    top: str = "/"

    def place(self, path: str) -> str | None:
        """The place in the target of the snapshot path `path` (as RestoreStats records it); None
        for a path outside `top`, which no entry of this restore has."""
        top = self.top.rstrip("/")
        if path in (self.top, top):
            return self.target
        if not path.startswith(top + "/"):
            return None
        return os.path.join(self.target, path[len(top) + 1 :])


def top_of(subpath: bytes, *, is_dir: bool) -> bytes:
    """The snapshot directory a restore of `subpath` lays down into the target: `subpath` itself for
    a directory (or the root), its parent for anything else (a file is restored under its name)."""
    if is_dir:
        return subpath
    return os.path.dirname(subpath.rstrip(b"/")) or b"/"
