"""Component and writer restores as one call that reports in JSON: the same for the CLI and the daemon.

A component restore (files, user-profiles, system-state into a target root) and a restore through
writers (stop, lay down, recover, start; or an authoritative LDAP restore) each send their plans to
`emit` before anything changes and return a summary made only of JSON values. Files a restore could
not lay down are named as a files restore names them: the snapshot's `path` and the `target` place
(archive/restore_places.py), in a component restore's summary and as a writer restore's
`file_error` events (its files fail the writer, whose error names the first). The CLI prints both
(cli/writer_restore.py, cli/components.py) whether it ran the job itself or followed the daemon's
run of it (service/application_restore_work.py), so the output is the same either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shadowvault.archive.restore_places import entry_fields
from shadowvault.jobs.restore_component import ComponentRestoreRequest, run_component_restore
from shadowvault.jobs.restore_ldap_authoritative import AuthoritativeRequest, run_authoritative_restore
from shadowvault.jobs.restore_writer import WriterRestoreRequest, run_writer_restore
from shadowvault.jobs.writer_plan import WriterPlan, in_place
from shadowvault.repo.repository import Repository

Emit = Callable[[str, dict[str, Any]], None]  # (message_type, event): a plan, before anything changes


@dataclass
class WriterRestoreOrder:
    """A writer restore, or with `authoritative` DNs an authoritative LDAP restore of those subtrees."""

    request: WriterRestoreRequest
    authoritative: list[str] = field(default_factory=list)


def restore_component_reporting(repo: Repository, request: ComponentRestoreRequest) -> dict[str, Any]:
    """Plan and (unless a dry run) restore the component; the summary with the plan as JSON."""
    result = run_component_restore(repo, request)
    return {
        "snapshot_id": result.snapshot_id,
        "applied": result.applied,
        "plan": result.plan.to_dict(),
        "errors": [
            *({**entry_fields(path, place), "reason": why} for path, place, why in result.file_errors),
            *({"path": what, "reason": why} for what, why in result.errors),  # steps of the plan
        ],
    }


def restore_writers_reporting(repo: Repository, order: WriterRestoreOrder, emit: Emit) -> dict[str, Any]:
    """Run the writer restore `order` asks for, its plans to `emit` first; its summary."""
    request = order.request
    if order.authoritative:
        authoritative = AuthoritativeRequest(
            snapshot=request.snapshot,
            dns=list(order.authoritative),
            writers=list(request.writers),
            options=request.options,
            writer_options=request.writer_options,
            dry_run=request.dry_run,
        )
        done = run_authoritative_restore(
            repo, authoritative, on_plan=lambda plan: emit("authoritative_plan", plan.to_dict())
        )
        plan = done.plan
        return {
            "snapshot_id": done.snapshot_id,
            "mode": "authoritative",
            "writer": plan.label,
            "role": plan.role,
            "url": plan.directory.url,
            "dry_run": not done.applied,
            "added": plan.count("add"),
            "rewritten": plan.count("rewrite"),
            "kept": plan.count("keep"),
        }
    target_root = request.target_root or "/"

    def emit_plans(plans: list[WriterPlan]) -> None:
        for plan in plans:
            emit("writer_plan", {"target_root": target_root, **plan.to_dict()})

    def emit_file_errors(errors: list[tuple[bytes, bytes | None, str]]) -> None:
        for path, place, why in errors:  # each by its place below the target root, as a files restore
            emit("file_error", {**entry_fields(path, place), "message": why})

    result = run_writer_restore(repo, request, on_plans=emit_plans, on_file_errors=emit_file_errors)
    return {
        "snapshot_id": result.snapshot_id,
        "target_root": target_root,
        "in_place": in_place(request.target_root),
        "dry_run": request.dry_run,
        "chosen": result.chosen,
        "restored": [r.label for r in result.restored],
        "skipped": result.skipped,
        "notes": {r.label: r.notes for r in result.restored if r.notes},
    }
