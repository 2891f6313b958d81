"""Where in the target a restore lays down a snapshot path: what a user looks at after a restore.

A restore reports what it kept, warned about and failed by snapshot path (`RestoreStats`); a user
looks in the target, as `restore --dry-run` shows it (restore_preview.py). The target directory
stands for one snapshot directory (`top`): the snapshot's root for a whole-snapshot restore, SUBPATH
for `SNAP:SUBPATH`, the file's directory for a single file. Every entry's place is the target plus
its path below `top`, so the place is derived when shown, never stored: a restore that keeps a
million files holds one path per file, not two. Paths are bytes, as the snapshot and the file system
name them: a name that is not UTF-8 is shown escaped and given exactly in JSON (display.exact_fields).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from shadowvault.display import display_name, exact_bytes, exact_fields


@dataclass(frozen=True)
class TargetPlaces:
    """The target directory (as the user named it) and the snapshot directory it stands for."""

    target: bytes
    top: bytes = b"/"

    def place(self, path: bytes) -> bytes | None:
        """The place in the target of the snapshot path `path` (as RestoreStats records it); None
        for a path outside `top`, which no entry of this restore has."""
        top = self.top.rstrip(b"/")
        if path in (self.top, top):
            return self.target
        if not path.startswith(top + b"/"):
            return None
        return os.path.join(self.target, path[len(top) + 1 :])


def top_of(subpath: bytes, *, is_dir: bool) -> bytes:
    """The snapshot directory a restore of `subpath` lays down into the target: `subpath` itself for
    a directory (or the root), its parent for anything else (a file is restored under its name)."""
    if is_dir:
        return subpath
    return os.path.dirname(subpath.rstrip(b"/")) or b"/"


def entry_fields(path: bytes, place: bytes | None) -> dict[str, str | None]:
    """An entry a restore names, as JSON: the snapshot's `path` and its `target` place (null when it
    has none), each exact as `ls` gives names (`path_bytes`/`target_bytes` when not UTF-8)."""
    fields: dict[str, str | None] = {**exact_fields("path", path), "target": None}
    if place is not None:
        fields.update(exact_fields("target", place))
    return fields


def entry_of_fields(fields: dict[str, Any]) -> tuple[bytes, bytes | None]:
    """(path, place) of an entry as `entry_fields` wrote it (a daemon's run reports them so)."""
    place = exact_bytes(fields, "target") if fields.get("target") is not None else None
    return exact_bytes(fields, "path"), place


def entry_shown(path: bytes, place: bytes | None) -> str:
    """An entry for people: its place in the target, or its snapshot path said to be one."""
    return display_name(place) if place is not None else f"{display_name(path)} (in the snapshot)"
