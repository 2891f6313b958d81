"""CLI glue for `restore SNAP --writer NAME[:INSTANCE]` / `--writers`: restore applications through writers.

Parses the options, runs the writer restore job (jobs/restore_writer.py: pre_restore -> files ->
post_restore for every writer the plan restores) and prints its plan (jobs/writer_plan.py) and result.
With --authoritative DN (ldap only) it runs the authoritative directory restore instead
(jobs/restore_ldap_authoritative.py): no file is laid down, the entries are written online.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from shadowvault.cli.output import info, note, print_json
from shadowvault.errors import UsageError
from shadowvault.jobs.restore_ldap_authoritative import (
    AuthoritativePlan,
    AuthoritativeRequest,
    AuthoritativeResult,
)
from shadowvault.jobs.restore_ldap_authoritative import run_authoritative_restore as restore_authoritatively
from shadowvault.jobs.restore_writer import WriterRestoreRequest
from shadowvault.jobs.restore_writer import run_writer_restore as restore_writers
from shadowvault.jobs.writer_plan import WriterPlan, in_place
from shadowvault.repo.repository import Repository

F = TypeVar("F", bound=Callable[..., Any])


def restore_writer_options(func: F) -> F:
    """--writer, --writers, --writer-option for `restore`."""
    options = [
        click.option(
            "--writer",
            "writers",
            multiple=True,
            metavar="NAME[:INSTANCE]",
            help="Restore this writer's components through the writer (stop, lay down, recover, start); "
            "repeatable.",
        ),
        click.option(
            "--writers",
            "all_writers",
            is_flag=True,
            help="Restore every application writer's components recorded in the snapshot's manifest.",
        ),
        click.option(
            "--writer-option",
            "writer_option_specs",
            multiple=True,
            metavar="[WRITER.]KEY=VALUE",
            help="An option for the writers' restore (e.g. port=5544, socket_dir=/run/x, start=false, "
            "postgresql_mode=crash); WRITER. limits it to one writer; VALUE is JSON or a string.",
        ),
        click.option(
            "--authoritative",
            "authoritative",
            multiple=True,
            metavar="DN",
            help="With --writer ldap[:INSTANCE]: restore this entry and its subtree authoritatively, "
            "re-added online with fresh change stamps so the backup's version wins on every replica "
            "(repeatable; docs/directory-recovery.md). Without it a replica is restored "
            "non-authoritatively and catches up from its partner.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_writer_options(specs: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`KEY=VALUE` -> every writer; `WRITER.KEY=VALUE` (WRITER a name or NAME:INSTANCE) -> that one."""
    common: dict[str, Any] = {}
    per_writer: dict[str, dict[str, Any]] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise UsageError(f"--writer-option wants [WRITER.]KEY=VALUE, not {spec!r}")
        writer, dot, name = key.rpartition(".")
        if dot and writer:
            per_writer.setdefault(writer, {})[name] = _value(value)
        else:
            common[name] = _value(value)
    return common, per_writer


def run_writer_restore(
    repo: Repository,
    snapshot: str,
    *,
    writers: tuple[str, ...],
    target_root: str | None,
    option_specs: tuple[str, ...],
    overwrite: str,
    dry_run: bool,
    as_json: bool,
    authoritative: tuple[str, ...] = (),
) -> None:
    common, per_writer = parse_writer_options(option_specs)
    if authoritative:
        if not in_place(target_root):
            raise UsageError(
                "--authoritative writes to the running directory: --target-root and --target do not apply"
            )
        authoritative_request = AuthoritativeRequest(
            snapshot=snapshot,
            dns=list(authoritative),
            writers=list(writers),
            options=common,
            writer_options=per_writer,
            dry_run=dry_run,
        )
        _print_authoritative(
            restore_authoritatively(repo, authoritative_request, on_plan=_plan_printer(as_json)), as_json
        )
        return
    request = WriterRestoreRequest(
        snapshot=snapshot,
        writers=list(writers),
        target_root=target_root,
        options=common,
        writer_options=per_writer,
        overwrite=overwrite,
        dry_run=dry_run,
    )

    def print_plans(plans: list[WriterPlan]) -> None:
        for plan in plans:
            if as_json:
                print_json(
                    {"message_type": "writer_plan", "target_root": target_root or "/", **plan.to_dict()}
                )
            else:
                for line in plan.lines():
                    info(line)

    result = restore_writers(repo, request, on_plans=print_plans)
    restored = [r.label for r in result.restored]
    where = "in place" if in_place(target_root) else f"below {target_root}"
    if as_json:
        print_json(
            {
                "message_type": "summary",
                "snapshot_id": result.snapshot_id,
                "target_root": target_root or "/",
                "dry_run": dry_run,
                "restored": restored,
                "skipped": result.skipped,
                "notes": {r.label: r.notes for r in result.restored if r.notes},
            }
        )
    elif dry_run:
        note(f"dry run, nothing changed: {len(result.chosen)} writer(s) would be restored {where}")
    else:
        for done in result.restored:
            note(f"restored {done.label} {where} through its writer")
            for line in done.notes:
                note(f"  {line}")
        if result.skipped:
            note(f"left alone: {', '.join(result.skipped)}")


def _plan_printer(as_json: bool) -> Callable[[AuthoritativePlan], None]:
    def show(plan: AuthoritativePlan) -> None:
        if as_json:
            print_json({"message_type": "authoritative_plan", **plan.to_dict()})
        else:
            for line in plan.lines():
                info(line)

    return show


def _print_authoritative(result: AuthoritativeResult, as_json: bool) -> None:
    plan = result.plan
    added, rewritten, kept = plan.count("add"), plan.count("rewrite"), plan.count("keep")
    if as_json:
        print_json(
            {
                "message_type": "summary",
                "snapshot_id": result.snapshot_id,
                "mode": "authoritative",
                "writer": plan.label,
                "dry_run": not result.applied,
                "added": added,
                "rewritten": rewritten,
                "kept": kept,
            }
        )
        return
    if not result.applied:
        note(f"dry run, nothing changed: {added} would be added, {rewritten} rewritten, {kept} kept")
        return
    note(
        f"restored {plan.label} (authoritative): {added} added, {rewritten} rewritten, "
        f"{kept} already as in the backup"
    )
    if plan.role == "standalone":
        note("  no syncrepl replication in its configuration: the entries are back on this server")
    else:
        note(f"  with fresh change stamps they replicate from {plan.directory.url} to every replica")
