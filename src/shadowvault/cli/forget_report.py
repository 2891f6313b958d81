"""What `forget` prints, in restic's shape: for each group of snapshots (--group-by) a line naming
the group, then the snapshots kept with the rules that keep them and the snapshots removed.

With several groups one table of everything hid which snapshots a `--keep-last` counted together;
a group per block says it. Under --json the same groups are the summary's `groups` (restic's forget
--json is a list of groups with their keep, remove and reasons).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shadowvault.cli.output import info, listing, print_table
from shadowvault.cli.repository import format_time
from shadowvault.display import counted, escape_text
from shadowvault.repo.forget import Group
from shadowvault.repo.retention_groups import GroupKey
from shadowvault.repo.snapshot import Snapshot


@dataclass(frozen=True)
class Listed:
    """One snapshot of a group and the rules that keep it (none: it is removed)."""

    snapshot_id: str
    snapshot: Snapshot | None  # None: a damaged snapshot file, forgotten by its id alone
    reasons: list[str] = field(default_factory=list)


@dataclass
class GroupReport:
    """A group's decisions, each list oldest first (as `snapshots` lists them)."""

    key: GroupKey | None  # None: the snapshots were named on the command line
    keep: list[Listed]
    remove: list[Listed]


def policy_reports(groups: Sequence[Group]) -> list[GroupReport]:
    """The groups a retention policy decided."""
    reports = []
    for group in groups:
        decided = sorted(group.decisions, key=lambda d: d.snapshot.time)
        keep = [Listed(d.snapshot_id, d.snapshot, d.reasons) for d in decided if d.keep]
        remove = [Listed(d.snapshot_id, d.snapshot) for d in decided if not d.keep]
        reports.append(GroupReport(group.key, keep, remove))
    return reports


def named_report(chosen: Sequence[tuple[str, Snapshot | None]]) -> list[GroupReport]:
    """The snapshots named on the command line: one group, all removed, in the order given."""
    return [GroupReport(None, [], [Listed(sid, snap) for sid, snap in chosen])]


def group_title(key: GroupKey | None) -> str | None:
    """`snapshots of host web, paths /srv/www:`; None when nothing groups them (`--group-by ''`,
    or snapshots named by id)."""
    shared = key.describe() if key is not None else ""
    return f"snapshots of {escape_text(shared)}:" if shared else None


_COLUMNS = ["ID", "Time", "Host", "Tags", "Paths"]


def _row(item: Listed, with_reasons: bool) -> list[str]:
    snap = item.snapshot
    if snap is None:
        row = [item.snapshot_id[:8], "", "", "", "(damaged snapshot file)"]
    else:
        tags = ", ".join(escape_text(t) for t in snap.tags)
        paths = "\n".join(escape_text(p) for p in snap.paths)  # one line per path, as `snapshots`
        row = [item.snapshot_id[:8], format_time(snap.time), escape_text(snap.host), tags, paths]
    return [*row, ", ".join(item.reasons)] if with_reasons else row


def print_reports(reports: Sequence[GroupReport], *, dry_run: bool) -> None:
    """Each group's block (a blank line between two), then how many snapshots went."""
    for number, report in enumerate(reports):
        if number:
            listing("")
        title = group_title(report.key)
        if title is not None:
            listing(title)
        if report.keep:
            rows = [_row(item, True) for item in report.keep]
            print_table([*_COLUMNS, "Reasons"], rows, title=f"keep {counted(len(rows), 'snapshot')}:")
        if report.remove:
            if report.keep:
                listing("")
            rows = [_row(item, False) for item in report.remove]
            print_table(_COLUMNS, rows, title=f"remove {counted(len(rows), 'snapshot')}:")
    removed = sum(len(report.remove) for report in reports)
    info(f"{'would remove' if dry_run else 'removed'} {counted(removed, 'snapshot')}")


def reports_json(reports: Sequence[GroupReport]) -> list[dict[str, Any]]:
    """The summary's `groups`: what each group shares (null for what does not group it), and its
    kept snapshots with their reasons and removed ones (a damaged one says so)."""
    groups = []
    for report in reports:
        key = report.key.as_dict() if report.key else {"host": None, "paths": None, "tags": None}
        groups.append(
            {
                **key,
                "group_key": key if report.key else None,
                "keep": [{**_entry(item), "reasons": item.reasons} for item in report.keep],
                "remove": [_entry(item) for item in report.remove],
            }
        )
    return groups


def _entry(item: Listed) -> dict[str, Any]:
    if item.snapshot is None:
        return {"id": item.snapshot_id, "time": None, "damaged": True}
    snap = item.snapshot
    return {
        "id": item.snapshot_id,
        "time": snap.time,
        "host": snap.host,
        "paths": snap.paths,
        "tags": snap.tags,
    }
