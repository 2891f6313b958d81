"""What a restore through writers will do, decided from the manifest's restore methods before anything runs.

The manifest gives every component a restore method (VSS_RESTOREMETHOD_ENUM for Linux services):
if not there, if can replace, stop-restore-start, to an alternate location, custom. This module turns
them, with what is on disk in the target now, into a plan per writer: restore it (and which paths
are created or set aside and replaced, whether the application is stopped and started), skip it
(restore_if_not_there and its data is present), or refuse it (an alternate-location component asked
to go back in place). `restore SNAP --writer ... --dry-run` prints the plan; the real restore
(jobs/restore_writer.py) runs only the writers the plan restores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from shadowvault.archive.tree_paths import find_node
from shadowvault.errors import NotFoundError, UsageError
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.shadow import manifest as manifest_doc
from shadowvault.shadow.manifest import RestoreMethod, ShadowSetManifest, WriterReport

FILESYSTEM_WRITERS = ("fsfreeze",)  # they freeze volumes and hold no application data to restore


def load_manifest(repo: Repository, snapshot: Snapshot) -> ShadowSetManifest:
    """The backup manifest saved with `snapshot` (a snapshot made without a shadow set has none)."""
    if not snapshot.manifest:
        raise NotFoundError("this snapshot has no backup manifest (it was not made through a shadow set)")
    return manifest_doc.decode(repo.load_blob(snapshot.manifest))


def report_label(report: WriterReport) -> str:
    """`name` or `name:instance`, as users name writers."""
    return f"{report.name}:{report.instance}" if report.instance else report.name


def selected_reports(manifest: ShadowSetManifest, wanted: list[str] | None) -> list[WriterReport]:
    """The application writers of `manifest` that `wanted` names (all of them when it names none)."""
    reports = [r for r in manifest.writers if r.components]
    if not wanted:
        return [r for r in reports if r.name not in FILESYSTEM_WRITERS]
    chosen: list[WriterReport] = []
    for spec in wanted:
        matches = [r for r in reports if spec in (r.name, report_label(r))]
        if not matches:
            known = ", ".join(report_label(r) for r in reports) or "none"
            raise UsageError(f"writer {spec!r} is not in this snapshot's manifest (it has: {known})")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


@dataclass
class PathAction:
    """One path of a component: where it goes and what happens to what is there."""

    path: str  # as backed up
    target: str  # where it is laid down
    # "create" | "replace" (what is there is set aside as NAME.pre-restore-TIME) | "keep" |
    # "set_aside" (not in the backup, e.g. a -wal the database did not have then: what is there is
    # set aside and nothing is laid down)
    action: str


@dataclass
class WriterPlan:
    """The plan for one writer instance."""

    label: str
    methods: list[str]
    components: list[str]
    decision: str  # "restore" | "skip"
    reason: str
    stop_start: bool  # the writer stops the application first and recovers/starts it afterwards
    paths: list[PathAction] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "writer": self.label,
            "restore_methods": self.methods,
            "components": self.components,
            "decision": self.decision,
            "reason": self.reason,
            "stop_start": self.stop_start,
            "paths": [vars(p) for p in self.paths],
        }

    def lines(self) -> list[str]:
        return writer_plan_lines(self.to_dict())


def writer_plan_lines(plan: dict[str, Any]) -> list[str]:
    """A writer's plan for people, from its JSON form (the daemon sends plans as JSON)."""
    head = f"{plan['writer']} ({', '.join(plan['restore_methods'])}): {plan['decision']}"
    out = [f"{head}, {plan['reason']}" if plan["reason"] else head]
    if plan["decision"] == "restore" and plan["stop_start"]:
        out.append("  stop the application if it runs in the target")
    for p in plan["paths"]:
        verb = {"create": "create", "replace": "set aside and replace", "keep": "keep"}.get(p["action"])
        out.append(f"  {verb} {p['target']}" if verb else f"  set aside {p['target']} (not in the backup)")
    if plan["decision"] == "restore":
        out.append("  then post_restore: the writer recovers, checks and starts it (as its options say)")
    return out


def in_place(target_root: str | None) -> bool:
    return target_root in (None, "", "/")


def target_path(target_root: str | None, path: str) -> str:
    """Where `path` of the snapshot is laid down below `target_root` (itself, in place)."""
    return path if in_place(target_root) else os.path.join(str(target_root), path.lstrip("/"))


def _present(path: str) -> bool:
    """Something a restore would replace: an existing file, or a directory that is not empty."""
    if not os.path.lexists(path):
        return False
    return not (os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path))


def in_snapshot(repo: Repository, snapshot: Snapshot, path: str) -> bool:
    """Whether the snapshot holds `path`: a component may name files that did not exist at backup
    (SQLite's -wal, -shm and -journal come and go)."""
    try:
        find_node(repo, snapshot.tree, path)
    except NotFoundError:
        return False
    return True


def writer_reports(manifest: ShadowSetManifest, wanted: list[str] | None) -> list[WriterReport]:
    """The application writers selected (all of them when `wanted` is empty), one clear error otherwise."""
    chosen = selected_reports(manifest, [_spec(manifest, w) for w in wanted or []])
    if not chosen:
        raise UsageError(_nothing_to_restore(manifest))
    return chosen


def _spec(manifest: ShadowSetManifest, wanted: str) -> str:
    """An external writer is named by its writers.d name at backup (`--writer app`): accept that too."""
    for report in manifest.writers:
        if report.name == "external" and report.instance == wanted:
            return report_label(report)
    return wanted


def _nothing_to_restore(manifest: ShadowSetManifest) -> str:
    names = sorted({report_label(r) for r in manifest.writers if r.name not in FILESYSTEM_WRITERS})
    if names:
        return f"this snapshot has no writer components to restore (its writers: {', '.join(names)})"
    return "this snapshot has no writer components to restore (no application writer took part in it)"


def plan_writer_restore(
    repo: Repository, snapshot: Snapshot, target_root: str | None, wanted: list[str] | None
) -> list[WriterPlan]:
    """Decide, per selected writer, what a restore into `target_root` (None or / = in place) does."""
    manifest = load_manifest(repo, snapshot)
    plans = []
    for report in writer_reports(manifest, wanted):
        methods = sorted({str(c.restore_method) for c in report.components})
        label = report_label(report)
        paths = []
        for component in report.components:
            for path in component.paths:
                target = target_path(target_root, path)
                if in_snapshot(repo, snapshot, path):
                    paths.append(PathAction(path, target, "replace" if _present(target) else "create"))
                elif _present(target):  # newer than the backup (a -wal): must not meet the restored files
                    paths.append(PathAction(path, target, "set_aside"))
        plan = WriterPlan(
            label=label,
            methods=methods,
            components=[c.name for c in report.components],
            decision="restore",
            reason="",
            stop_start=RestoreMethod.STOP_RESTORE_START in methods,
            paths=paths,
        )
        if RestoreMethod.RESTORE_TO_ALTERNATE_LOCATION in methods and in_place(target_root):
            raise UsageError(f"writer {label} restores only to an alternate location: give --target-root DIR")
        if RestoreMethod.RESTORE_IF_NOT_THERE in methods and any(p.action == "replace" for p in paths):
            plan.decision = "skip"
            plan.reason = "its data is already there (restore method restore_if_not_there)"
            for p in plan.paths:
                p.action = "keep" if p.action == "replace" else p.action
        plans.append(plan)
    return plans
