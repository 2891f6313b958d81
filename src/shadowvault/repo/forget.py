"""Retention policies (restic's semantics): which snapshots `forget` keeps and why.

Snapshots are grouped by host and paths (or as `--group-by` says, repo/retention_groups.py); in
each group, newest first, a `--keep-daily 7` rule keeps the newest snapshot of each of the 7 most
recent days that have one, and so on for every rule. A count of -1 means unlimited.
`--keep-within 2y5m` keeps every snapshot less than that older than the newest of its group;
`--keep-within-daily 7d` (hourly, weekly, monthly, yearly alike) keeps the newest of each day among
those (repo/durations.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from shadowvault.repo.durations import Duration
from shadowvault.repo.retention_groups import DEFAULT_GROUP_BY, GroupBy, GroupKey, group_snapshots
from shadowvault.repo.snapshot import Snapshot, chronological
from shadowvault.repo.tag_lists import has_tag_lists

RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
WITHIN_RULES = ("hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class KeepPolicy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    tags: tuple[str, ...] = ()  # --keep-tag lists: `a,b` keeps snapshots with both (restic's)
    within: Duration | None = None
    within_hourly: Duration | None = None
    within_daily: Duration | None = None
    within_weekly: Duration | None = None
    within_monthly: Duration | None = None
    within_yearly: Duration | None = None

    def __post_init__(self) -> None:
        for rule in ("within", *(f"within_{rule}" for rule in WITHIN_RULES)):
            duration = getattr(self, rule)
            if duration is not None and duration.is_zero():  # `--keep-within 0d` is no rule, as in restic
                object.__setattr__(self, rule, None)

    def within_rules(self) -> dict[str, Duration]:
        """The --keep-within-RULE durations given, in WITHIN_RULES order."""
        given = {rule: getattr(self, f"within_{rule}") for rule in WITHIN_RULES}
        return {rule: duration for rule, duration in given.items() if duration is not None}

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

    def describe(self) -> str:
        """The policy in words, as `forget` announces it (restic's "Applying Policy: ..."), so that a
        mistyped rule shows before the tables of what it kept."""
        parts = []
        for rule, count in self.counts().items():
            if count:
                amount = "all" if count < 0 else str(count)
                parts.append(f"{amount} {'latest' if rule == 'last' else rule}")
        if self.within is not None:
            parts.append(f"all within {self.within} of the newest")
        for rule, duration in self.within_rules().items():
            parts.append(f"{rule} within {duration}")
        if self.tags:
            parts.append(f"all tagged {' or '.join(self.tags)}")
        return "keep " + ", ".join(parts)

    def is_empty(self) -> bool:
        return (
            not self.tags
            and self.within is None
            and not self.within_rules()
            and all(count == 0 for count in self.counts().values())
        )


@dataclass
class Decision:
    snapshot_id: str
    snapshot: Snapshot
    keep: bool
    reasons: list[str] = field(default_factory=list)


@dataclass
class Group:
    host: str | None  # None when not grouped by host
    paths: list[str] | None  # None when not grouped by paths
    decisions: list[Decision]  # newest first
    key: GroupKey | None = None


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
    snapshots: Sequence[tuple[str, Snapshot]],
    policy: KeepPolicy,
    *,
    utc: bool = False,
    group_by: GroupBy = DEFAULT_GROUP_BY,
) -> list[Group]:
    """Decide for every snapshot; times are bucketed in local time (UTC with `utc`)."""
    to_tm = time.gmtime if utc else time.localtime
    result = []
    for key, members in group_snapshots(snapshots, group_by):
        members.sort(key=chronological, reverse=True)
        counts = policy.counts()
        last: dict[str, object] = {}
        newest = members[0][1].time  # durations count back from the group's newest snapshot
        within = policy.within.before(newest, utc=utc) if policy.within else None
        within_rules = {rule: (d, d.before(newest, utc=utc)) for rule, d in policy.within_rules().items()}
        last_within: dict[str, object] = {}
        decisions = []
        for position, (sid, snap) in enumerate(members):
            reasons = [f"tag {tags}" for tags in policy.tags if has_tag_lists([tags], snap.tags)]
            if within is not None and snap.time > within:
                reasons.append(f"within {policy.within}")
            for rule, (duration, since) in within_rules.items():
                bucket = _bucket(rule, snap.time, position, to_tm)
                if snap.time > since and bucket != last_within.get(rule, object()):
                    last_within[rule] = bucket
                    reasons.append(f"{rule} within {duration}")
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
        paths = list(key.paths) if key.paths is not None else None
        result.append(Group(key.host, paths, decisions, key))
    return result
