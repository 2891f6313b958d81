"""`tag`: change a snapshot's tags by writing a new snapshot file and removing the old one (restic's way).

A snapshot file is named by the hash of its content, so a change is a new file. The new one keeps
everything else, the backup time included, and records the id it replaces in `original` (the first
one, when the snapshot was changed before). The new file is written before the old one is removed:
a crash in between leaves both, never neither.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from shadowvault.errors import UsageError
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tag_lists import checked_label


@dataclass(frozen=True)
class TagChange:
    """--add, --remove, or --set (which replaces every tag; an empty --set removes them all)."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    set_to: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.set_to is not None and (self.add or self.remove):
            raise UsageError("--set replaces every tag: give it alone, not with --add or --remove")
        if self.set_to is None and not self.add and not self.remove:
            raise UsageError("give the tags to change with --add, --remove or --set")
        for tag in [*self.add, *(self.set_to or ())]:
            checked_label(tag, "tag")

    def apply(self, tags: Iterable[str]) -> list[str]:
        """The new tags, in their old order with added ones after (each once)."""
        if self.set_to is not None:
            return list(dict.fromkeys(self.set_to))
        kept = [t for t in dict.fromkeys(tags) if t not in self.remove]
        return kept + [t for t in dict.fromkeys(self.add) if t not in kept and t not in self.remove]


@dataclass(frozen=True)
class Retagged:
    old_id: str
    new_id: str
    old_tags: list[str]
    tags: list[str]


def retag(repo: Repository, snapshots: Iterable[tuple[str, Snapshot]], change: TagChange) -> list[Retagged]:
    """Rewrite each snapshot whose tags `change` alters; the others stay as they are."""
    done: list[Retagged] = []
    for snapshot_id, snapshot in snapshots:
        tags = change.apply(snapshot.tags)
        if tags == snapshot.tags:
            continue
        replacement = msgspec.structs.replace(snapshot, tags=tags, original=snapshot.original or snapshot_id)
        new_id = repo.save_snapshot(replacement)
        if new_id != snapshot_id:
            repo.remove_snapshot(snapshot_id)
        done.append(Retagged(snapshot_id, new_id, list(snapshot.tags), tags))
    return done
