"""The authoritative directory restore job: `restore SNAP --writer ldap[:INSTANCE] --authoritative DN...`.

Unlike a writer restore (jobs/restore_writer.py), nothing is stopped and no file is laid down: the
entries of the requested subtrees are read from the LDIF the ldap writer kept in the snapshot's
manifest and written to the running slapd with fresh change stamps, so they win on every replica
(shadow/writers/ldap_authoritative.py). The plan is made, and shown through `on_plan`, before
anything is written; a dry run stops there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shadowvault.errors import UsageError
from shadowvault.jobs.restore_writer import keyed_by_plan
from shadowvault.jobs.writer_plan import load_manifest, report_label, writer_reports
from shadowvault.repo.repository import Repository
from shadowvault.shadow.writers.ldap_authoritative import (
    AuthoritativePlan,
    apply_authoritative,
    plan_authoritative,
)


@dataclass
class AuthoritativeRequest:
    snapshot: str  # a snapshot ref: an id, a unique prefix or "latest"
    dns: list[str]  # each: that entry and its subtree
    writers: list[str] = field(default_factory=list)  # ldap or ldap:INSTANCE; empty: the one ldap writer
    options: dict[str, Any] = field(default_factory=dict)
    writer_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    dry_run: bool = False


@dataclass
class AuthoritativeResult:
    snapshot_id: str
    plan: AuthoritativePlan
    applied: bool


def run_authoritative_restore(
    repo: Repository,
    request: AuthoritativeRequest,
    *,
    on_plan: Callable[[AuthoritativePlan], None] | None = None,
) -> AuthoritativeResult:
    """Plan the restore of `request.dns` (shown through `on_plan`), then, unless a dry run, apply it."""
    snapshot_id, snapshot = repo.find_snapshot(request.snapshot)
    reports = writer_reports(load_manifest(repo, snapshot), list(request.writers) or None)
    others = [report_label(r) for r in reports if r.name != "ldap"]
    if others and request.writers:
        raise UsageError(
            f"--authoritative restores LDAP entries: it goes with --writer ldap, not {others[0]}"
        )
    ldap = [r for r in reports if r.name == "ldap"]
    if len(ldap) != 1:
        found = ", ".join(report_label(r) for r in ldap) or "none"
        raise UsageError(
            f"--authoritative needs one ldap writer: give --writer ldap:INSTANCE (found: {found})"
        )
    report = ldap[0]
    label = report_label(report)
    per_writer = keyed_by_plan(request.writer_options, [label])
    options = {**request.options, **per_writer.get("ldap", {}), **per_writer.get(label, {})}
    plan = plan_authoritative(
        list(report.components), request.dns, config=str(report.instance), label=label, options=options
    )
    if on_plan is not None:
        on_plan(plan)
    if not request.dry_run:
        apply_authoritative(plan)
    return AuthoritativeResult(snapshot_id, plan, applied=not request.dry_run)
