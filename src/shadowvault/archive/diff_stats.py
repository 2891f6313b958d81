"""The figures under a `diff` (restic's): entries added and removed by kind, files changed, and
the data the second snapshot added and dropped.

The data figures count the data blobs of the changed entries: those only the second snapshot's
changed entries hold are "added", those only the first's are "removed". Identical subtrees are not
read (diff.py), so a blob that an unchanged file elsewhere also holds still counts; restic's figures
are counted the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shadowvault.archive.diff import Change, Difference


@dataclass
class KindCounts:
    """Entries by kind: files, directories, and everything else (links, devices, fifos, sockets)."""

    files: int = 0
    dirs: int = 0
    others: int = 0

    def add(self, entry_type: str) -> None:
        if entry_type == "file":
            self.files += 1
        elif entry_type == "dir":
            self.dirs += 1
        else:
            self.others += 1


@dataclass
class DiffStats:
    changes: dict[str, int] = field(default_factory=lambda: {change.value: 0 for change in Change})
    added: KindCounts = field(default_factory=KindCounts)
    removed: KindCounts = field(default_factory=KindCounts)
    changed_files: int = 0  # content or size changed, the same kind in both
    blobs_before: set[bytes] = field(default_factory=set)
    blobs_after: set[bytes] = field(default_factory=set)

    def add(self, difference: Difference) -> None:
        self.changes[difference.change.value] += 1
        if difference.change is Change.ADDED:
            self.added.add(difference.type)
        elif difference.change is Change.REMOVED:
            self.removed.add(difference.type)
        elif difference.change is Change.MODIFIED and difference.type == "file":
            self.changed_files += 1
        self.blobs_before.update(difference.before)
        self.blobs_after.update(difference.after)

    def data(self, blob_size: Callable[[bytes], int | None]) -> dict[str, int]:
        """Blobs and bytes only the second snapshot's changes hold (added), only the first's (removed)."""
        added = self.blobs_after - self.blobs_before
        removed = self.blobs_before - self.blobs_after
        return {
            "added_blobs": len(added),
            "added_bytes": sum(blob_size(blob) or 0 for blob in added),
            "removed_blobs": len(removed),
            "removed_bytes": sum(blob_size(blob) or 0 for blob in removed),
        }

    def as_json(self, blob_size: Callable[[bytes], int | None]) -> dict[str, Any]:
        """The counts by change (as before), then restic's shape: `changed_files`, and `added` /
        `removed` by kind with their data blobs and bytes."""
        data = self.data(blob_size)
        return {
            **self.changes,
            "changed_files": self.changed_files,
            "added_entries": {
                **vars(self.added),
                "data_blobs": data["added_blobs"],
                "bytes": data["added_bytes"],
            },
            "removed_entries": {
                **vars(self.removed),
                "data_blobs": data["removed_blobs"],
                "bytes": data["removed_bytes"],
            },
        }


def _entries(kinds: KindCounts, blobs: int, size: int) -> dict[str, int]:
    return {
        "files": kinds.files,
        "dirs": kinds.dirs,
        "others": kinds.others,
        "data_blobs": blobs,
        "bytes": size,
    }
