"""CLI glue for `restore SNAP --writer NAME[:INSTANCE]` / `--writers`: restore applications through writers.

Parses the options, runs the writer restore job (jobs/restore_writer.py: pre_restore -> files ->
post_restore for every writer the plan restores) and prints its plan (jobs/writer_plan.py) and result.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from shadowvault.cli.output import info, note, print_json
from shadowvault.errors import UsageError
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
) -> None:
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
            }
        )
    elif dry_run:
        note(f"dry run, nothing changed: {len(result.chosen)} writer(s) would be restored {where}")
    else:
        for label in restored:
            note(f"restored {label} {where} through its writer")
        if result.skipped:
            note(f"left alone: {', '.join(result.skipped)}")
