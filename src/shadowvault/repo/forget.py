"""Retention policies (restic's semantics): which snapshots `forget` keeps and why.

Snapshots are grouped by host and paths; in each group, newest first, a `--keep-daily 7` rule keeps
the newest snapshot of each of the 7 most recent days that have one, and so on for every rule.
A count of -1 means unlimited.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from shadowvault.repo.snapshot import Snapshot

RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class KeepPolicy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    tags: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        """How many snapshots each rule keeps (negative: every one), in RULES order."""
        return {
            "last": self.last,
            "hourly": self.hourly,
            "daily": self.daily,
            "weekly": self.weekly,
            "monthly": self.monthly,
            "yearly": self.yearly,
        }

    def is_empty(self) -> bool:
        return not self.tags and all(count == 0 for count in self.counts().values())


@dataclass
class Decision:
    snapshot_id: str
    snapshot: Snapshot
    keep: bool
    reasons: list[str] = field(default_factory=list)


@dataclass
class Group:
    host: str
    paths: list[str]
    decisions: list[Decision]  # newest first


def _bucket(rule: str, t: float, position: int, to_tm: Callable[[float], time.struct_time]) -> object:
    if rule == "last":
        return position
    tm = to_tm(t)
    if rule == "hourly":
        return (tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour)
    if rule == "daily":
        return (tm.tm_year, tm.tm_mon, tm.tm_mday)
    if rule == "weekly":
        iso = time.strftime("%G-%V", tm)
        return iso
    if rule == "monthly":
        return (tm.tm_year, tm.tm_mon)
    return tm.tm_year


def apply_policy(
    snapshots: Sequence[tuple[str, Snapshot]], policy: KeepPolicy, *, utc: bool = False
) -> list[Group]:
    """Decide for every snapshot; times are bucketed in local time (UTC with `utc`)."""
    to_tm = time.gmtime if utc else time.localtime
    groups: dict[tuple[str, tuple[str, ...]], list[tuple[str, Snapshot]]] = {}
    for sid, snap in snapshots:
        groups.setdefault((snap.host, tuple(sorted(snap.paths))), []).append((sid, snap))
    result = []
    for (host, paths), members in sorted(groups.items()):
        members.sort(key=lambda item: (item[1].time, item[0]), reverse=True)
        counts = policy.counts()
        last: dict[str, object] = {}
        decisions = []
        for position, (sid, snap) in enumerate(members):
            reasons = [f"tag {tag}" for tag in policy.tags if tag in snap.tags]
            for rule in RULES:
                if counts[rule] == 0:
                    continue
                bucket = _bucket(rule, snap.time, position, to_tm)
                if bucket != last.get(rule, object()):
                    last[rule] = bucket
                    if counts[rule] > 0:
                        counts[rule] -= 1
                    reasons.append(rule)
            decisions.append(Decision(sid, snap, bool(reasons), reasons))
        result.append(Group(host, list(paths), decisions))
    return result
