"""CLI glue for `restore SNAP --writer NAME[:INSTANCE]` / `--writers`: restore applications through writers.

Parses the options, runs the writer restore job (jobs/restore_writer.py: pre_restore -> files ->
post_restore for every writer the plan restores) in this process or in the daemon, and prints its
plan (jobs/writer_plan.py) and result from the JSON the job reports either way.
With --authoritative DN (ldap only) it runs the authoritative directory restore instead
(jobs/restore_ldap_authoritative.py): no file is laid down, the entries are written online.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from shadowvault.cli.components import report_error
from shadowvault.cli.output import info, listing, note, print_json
from shadowvault.cli.restore_daemon import here_or_in_daemon, writer_restore_through_daemon
from shadowvault.cli.snapshot_choice import SnapshotFilter
from shadowvault.client import Client
from shadowvault.display import counted
from shadowvault.errors import UsageError
from shadowvault.jobs.application_restores import Emit, WriterRestoreOrder, restore_writers_reporting
from shadowvault.jobs.restore_writer import WriterRestoreRequest
from shadowvault.jobs.writer_plan import in_place, writer_plan_lines
from shadowvault.repo.repository import Repository
from shadowvault.shadow.writers.ldap_authoritative import authoritative_plan_lines

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


def writer_restore_order(
    snapshot: str,
    *,
    writers: tuple[str, ...],
    target_root: str | None,
    option_specs: tuple[str, ...],
    overwrite: str,
    dry_run: bool,
    authoritative: tuple[str, ...] = (),
) -> WriterRestoreOrder:
    """The restore the options ask for (checked before anything runs, here or in the daemon)."""
    if authoritative and not in_place(target_root):
        raise UsageError(
            "--authoritative writes to the running directory: --target-root and --target do not apply"
        )
    common, per_writer = parse_writer_options(option_specs)
    request = WriterRestoreRequest(
        snapshot=snapshot,
        writers=list(writers),
        target_root=target_root,
        options=common,
        writer_options=per_writer,
        overwrite=overwrite,
        dry_run=dry_run,
    )
    return WriterRestoreOrder(request, list(authoritative))


def run_writer_restore(
    repo: str | None,
    password_file: str | None,
    snapshot_filter: SnapshotFilter,
    order: WriterRestoreOrder,
    *,
    as_json: bool,
) -> None:
    """Run the restore in this process or in the daemon; print its plans, then its result."""
    show = _plan_printer(as_json, dry_run=order.request.dry_run)

    def here(r: Repository, ref: str) -> dict[str, Any]:
        order.request.snapshot = ref
        return restore_writers_reporting(r, order, show)

    def there(client: Client, ref: str) -> dict[str, Any]:
        order.request.snapshot = ref
        return writer_restore_through_daemon(client, repo, password_file, order, show)

    summary = here_or_in_daemon(repo, password_file, order.request.snapshot, snapshot_filter, here, there)
    if as_json:
        print_json({"message_type": "summary", **summary})
    elif summary.get("mode") == "authoritative":
        _print_authoritative(summary)
    else:
        _print_writer_summary(summary)


def _plan_printer(as_json: bool, *, dry_run: bool) -> Emit:
    """Plans as JSON lines, or as text: a dry run's plan is what was asked for, shown even under -q."""
    say = listing if dry_run else info

    def show(message_type: str, plan: dict[str, Any]) -> None:
        if message_type == "file_error":  # a file not laid down: the writer's error follows
            report_error(plan, plan["message"], as_json=as_json)
            return
        if as_json:
            print_json({"message_type": message_type, **plan})
            return
        lines = authoritative_plan_lines if message_type == "authoritative_plan" else writer_plan_lines
        for line in lines(plan):
            say(line)

    return show


def _print_writer_summary(summary: dict[str, Any]) -> None:
    where = "in place" if summary["in_place"] else f"below {summary['target_root']}"
    if summary["dry_run"]:
        note(
            f"dry run, nothing changed: {counted(len(summary['chosen']), 'writer')} would be restored {where}"
        )
        return
    for label in summary["restored"]:
        note(f"restored {label} {where} through its writer")
        for line in summary["notes"].get(label, []):
            note(f"  {line}")
    if summary["skipped"]:
        note(f"left alone: {', '.join(summary['skipped'])}")


def _print_authoritative(summary: dict[str, Any]) -> None:
    added, rewritten, kept = summary["added"], summary["rewritten"], summary["kept"]
    if summary["dry_run"]:
        note(f"dry run, nothing changed: {added} would be added, {rewritten} rewritten, {kept} kept")
        return
    note(
        f"restored {summary['writer']} (authoritative): {added} added, {rewritten} rewritten, "
        f"{kept} already as in the backup"
    )
    if summary["role"] == "standalone":
        note("  no syncrepl replication in its configuration: the entries are back on this server")
    else:
        note(f"  with fresh change stamps they replicate from {summary['url']} to every replica")
