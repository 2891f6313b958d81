"""The component restore job: one component of a snapshot restored into a target root, with its merge rules.

The documents are restored first (small), the component plans against the target root from the
snapshot's entries, and --dry-run stops there. A real restore lays the component's paths down in a
staging directory inside the target root (jobs/snapshot_view.py), re-plans with the content at hand
(so identical files are left alone), applies the plan, and removes the staging directory. A
cancelled run stops before the plan is applied (while laying the paths down: within a file), never
in the middle of it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shadowvault import cancellation
from shadowvault.components import get
from shadowvault.components.base import RestoreOptions, check_target_root
from shadowvault.components.plan import Plan
from shadowvault.errors import NotFoundError
from shadowvault.jobs.snapshot_view import RepoView
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot


@dataclass
class ComponentRestoreRequest:
    """Which component of which snapshot, and how (the target root, merge rules, dry run: `options`)."""

    snapshot: str  # a snapshot ref: an id, a unique prefix or "latest"
    component: str
    options: RestoreOptions


def require_component(snapshot_id: str, snapshot: Snapshot, name: str) -> None:
    """`name` is a known component and the snapshot holds it."""
    get(name)  # an unknown name is a usage error, not "not in the snapshot"
    if name not in snapshot.components:
        has = ", ".join(snapshot.components) or "none"
        raise NotFoundError(f"snapshot {snapshot_id[:8]} has no {name} component (it has: {has})")


@dataclass
class ComponentRestore:
    """The plan (carried out unless a dry run) and what could not be restored."""

    snapshot_id: str
    plan: Plan
    applied: bool
    errors: list[tuple[str, str]] = field(default_factory=list)  # steps of the plan: (what, why)
    # files not laid down: (snapshot path, its place in the target root or None, why)
    file_errors: list[tuple[bytes, bytes | None, str]] = field(default_factory=list)


def place_of(path: bytes, plan: Plan, target_root: Path) -> bytes | None:
    """Where in the target root the plan lays the snapshot path `path` (what a user looks at): its
    action's target, or below its nearest planned directory (an entry the restore never created,
    such as one with an unsafe name); None when the plan places nothing on its way."""
    planned = {os.fsencode(a.source).strip(b"/"): a.target for a in plan.actions if a.source is not None}
    root = os.fsencode(target_root)
    parent, below = path.strip(b"/"), b""
    while True:
        if parent in planned:
            place = os.path.join(root, os.fsencode(planned[parent]).lstrip(b"/"))
            return os.path.join(place, below) if below else place
        if not parent:
            return None
        parent, _, name = parent.rpartition(b"/")
        below = os.path.join(name, below) if below else name


def run_component_restore(
    repo: Repository,
    request: ComponentRestoreRequest,
    *,
    on_plan: Callable[[Plan], None] | None = None,
) -> ComponentRestore:
    """The job: resolve the snapshot, then plan and (unless a dry run) restore the component."""
    snapshot_id, snapshot = repo.find_snapshot(request.snapshot)
    return restore_component(repo, snapshot_id, snapshot, request.component, request.options, on_plan=on_plan)


def restore_component(
    repo: Repository,
    snapshot_id: str,
    snapshot: Snapshot,
    name: str,
    options: RestoreOptions,
    *,
    on_plan: Callable[[Plan], None] | None = None,
) -> ComponentRestore:
    """Plan (and unless options.dry_run, carry out) the restore of component `name` of a snapshot."""
    require_component(snapshot_id, snapshot, name)
    options.target_root = check_target_root(
        options.target_root, yes_really=options.yes_really, dry_run=options.dry_run
    )
    component = get(name)
    # a real restore stages inside the target root: same filesystem, and its space is the target's
    staging_parent = None if options.dry_run else str(options.target_root)
    staging = Path(tempfile.mkdtemp(prefix=".shadowvault-staging-", dir=staging_parent))
    try:
        os.chmod(staging, 0o700)
        view = RepoView(repo, snapshot.tree, staging, snapshot.paths)
        view.fetch_documents(name)
        if options.dry_run:
            plan = component.plan(view, options)
            if on_plan is not None:
                on_plan(plan)
            return ComponentRestore(snapshot_id, plan, applied=False)
        errors = view.materialize(component.restore_prefixes(view, options))
        plan = component.plan(view, options)
        if on_plan is not None:
            on_plan(plan)
        cancellation.check(cancellation.current())
        with cancellation.shielded():  # the plan is carried out whole, or not at all
            component.apply(plan, view, options)
        file_errors = [(path, place_of(path, plan, options.target_root), why) for path, why in errors]
        return ComponentRestore(snapshot_id, plan, applied=True, errors=plan.errors, file_errors=file_errors)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
