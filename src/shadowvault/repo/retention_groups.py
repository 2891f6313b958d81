"""How `forget` groups snapshots before a retention policy applies to each group: restic's
`--group-by` (any of host, paths, tags; default host,paths; empty: one group of everything).

Paths and tags compare as sets (sorted), so the order they were given in does not split a group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shadowvault.errors import UsageError
from shadowvault.repo.snapshot import Snapshot

FIELDS = ("host", "paths", "tags")


@dataclass(frozen=True)
class GroupBy:
    host: bool = True
    paths: bool = True
    tags: bool = False


DEFAULT_GROUP_BY = GroupBy()  # restic's: host,paths


def parse_group_by(text: str) -> GroupBy:
    """`host,paths`, `paths`, `host,tags`, ... or an empty value (UsageError for an unknown field)."""
    fields = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(fields - set(FIELDS))
    if unknown:
        raise UsageError(
            f"--group-by takes host, paths, tags separated by commas (or nothing), not {', '.join(unknown)!r}"
        )
    return GroupBy(host="host" in fields, paths="paths" in fields, tags="tags" in fields)


@dataclass(frozen=True)
class GroupKey:
    """What the snapshots of one group share; None for a field that does not group."""

    host: str | None
    paths: tuple[str, ...] | None
    tags: tuple[str, ...] | None

    def order(self) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        return (self.host or "", self.paths or (), self.tags or ())

    def describe(self) -> str:
        """`host web, paths /srv/www, tags (none)`: what the group shares, in words ("" for nothing)."""
        parts = []
        if self.host is not None:
            parts.append(f"host {self.host}")
        if self.paths is not None:
            parts.append(f"paths {', '.join(self.paths)}")
        if self.tags is not None:
            parts.append(f"tags {', '.join(self.tags) if self.tags else '(none)'}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "paths": list(self.paths) if self.paths is not None else None,
            "tags": list(self.tags) if self.tags is not None else None,
        }


def group_key(snapshot: Snapshot, by: GroupBy) -> GroupKey:
    return GroupKey(
        host=snapshot.host if by.host else None,
        paths=tuple(sorted(snapshot.paths)) if by.paths else None,
        tags=tuple(sorted(snapshot.tags)) if by.tags else None,
    )


def group_snapshots(
    snapshots: Sequence[tuple[str, Snapshot]], by: GroupBy
) -> list[tuple[GroupKey, list[tuple[str, Snapshot]]]]:
    """The groups, ordered by key, each with its snapshots in the order given."""
    groups: dict[GroupKey, list[tuple[str, Snapshot]]] = {}
    for sid, snap in snapshots:
        groups.setdefault(group_key(snap, by), []).append((sid, snap))
    return sorted(groups.items(), key=lambda item: item[0].order())
