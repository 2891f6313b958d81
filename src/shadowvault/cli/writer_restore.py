"""CLI glue for `restore SNAP --writer NAME[:INSTANCE]` / `--writers`: restore applications through writers.

Parses the options, prints the plan (shadow/writers/restore_plan.py) and runs
shadow/writers/restore.py's pre_restore -> files -> post_restore for every writer the plan restores.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from shadowvault.cli.output import info, note, print_json
from shadowvault.errors import UsageError

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


def _for_planned_writers(
    per_writer: dict[str, dict[str, Any]], labels: list[str]
) -> dict[str, dict[str, Any]]:
    """Key WRITER.KEY options by the manifest's names; a WRITER not being restored is a typo: say so."""
    names = set(labels) | {label.split(":", 1)[0] for label in labels}
    keyed = {}
    for writer, values in per_writer.items():
        if f"external:{writer}" in names:  # an external writer by its writers.d name
            writer = f"external:{writer}"
        elif writer not in names:
            restoring = ", ".join(labels)
            raise UsageError(f"--writer-option {writer}.KEY: {writer} is not being restored ({restoring} is)")
        keyed.setdefault(writer, {}).update(values)
    return keyed


def run_writer_restore(
    repo: Any,
    snapshot_id: str,
    snapshot: Any,
    *,
    writers: tuple[str, ...],
    target_root: str | None,
    option_specs: tuple[str, ...],
    overwrite: str,
    dry_run: bool,
    as_json: bool,
) -> None:
    from shadowvault.shadow.writers.restore import restore_with_writers
    from shadowvault.shadow.writers.restore_plan import in_place, plan_writer_restore

    common, per_writer = parse_writer_options(option_specs)
    plans = plan_writer_restore(repo, snapshot, target_root, list(writers) or None)
    per_writer = _for_planned_writers(per_writer, [p.label for p in plans])
    where = "in place" if in_place(target_root) else f"below {target_root}"
    for plan in plans:
        if as_json:
            print_json({"message_type": "writer_plan", "target_root": target_root or "/", **plan.to_dict()})
        else:
            for line in plan.lines():
                info(line)
    chosen = [p.label for p in plans if p.decision == "restore"]
    skipped = [p.label for p in plans if p.decision != "restore"]
    restored = []
    if not dry_run and chosen:
        results = restore_with_writers(
            repo,
            snapshot,
            target_root or "/",
            writers=chosen,
            options=common,
            writer_options=per_writer,
            overwrite=overwrite,
        )
        restored = [r.label for r in results]
    if as_json:
        print_json(
            {
                "message_type": "summary",
                "snapshot_id": snapshot_id,
                "target_root": target_root or "/",
                "dry_run": dry_run,
                "restored": restored,
                "skipped": skipped,
            }
        )
    elif dry_run:
        note(f"dry run, nothing changed: {len(chosen)} writer(s) would be restored {where}")
    else:
        for label in restored:
            note(f"restored {label} {where} through its writer")
        if skipped:
            note(f"left alone: {', '.join(skipped)}")
