"""CLI glue for components: the options `backup` and `restore` add, and printing a restore plan.

`backup --component NAME` and `restore SNAP --component NAME` live in cli/backup.py and
cli/restore.py; this module keeps their component branches small (parse, call the job in
jobs/backup_components.py or jobs/restore_component.py, print).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from shadowvault.archive.restore_places import entry_fields, entry_of_fields, entry_shown
from shadowvault.cli.component_options import COMPONENT_NAMES, split_users
from shadowvault.cli.output import info, listing, note, print_json, warn
from shadowvault.cli.restore_daemon import component_restore_through_daemon, here_or_in_daemon
from shadowvault.cli.restore_report import stderr_json
from shadowvault.cli.snapshot_choice import SnapshotFilter
from shadowvault.client import Client
from shadowvault.components.base import RestoreOptions
from shadowvault.components.plan import FILE_KINDS, Plan
from shadowvault.display import counted
from shadowvault.errors import PartialFailure
from shadowvault.jobs.application_restores import restore_component_reporting
from shadowvault.jobs.restore_component import ComponentRestoreRequest
from shadowvault.repo.repository import Repository

F = TypeVar("F", bound=Callable[..., Any])


def restore_component_options(func: F) -> F:
    """The options of `restore --component`."""
    options = [
        click.option(
            "--component",
            default=None,
            type=click.Choice(COMPONENT_NAMES),
            help="Restore this component of the snapshot (with its merge rules).",
        ),
        click.option(
            "--target-root",
            default=None,
            type=click.Path(),
            help="The root of the machine to restore into (a component or writer restore).",
        ),
        click.option("--users", default=None, metavar="A,B", help="user-profiles: only these accounts."),
        click.option(
            "--map",
            "maps",
            multiple=True,
            metavar="SRC=DST",
            help="files: restore SRC (a path in the snapshot) to DST (repeatable); without --target-root,"
            " onto this machine (every restored path mapped; --dry-run lists what it writes).",
        ),
        click.option(
            "--create-missing-accounts",
            is_flag=True,
            help="files: create owners that do not exist in the target.",
        ),
        click.option(
            "--fix-fstab", is_flag=True, help="system-state: take the source fstab with the target's devices."
        ),
        click.option("--no-packages", is_flag=True, help="system-state: do not install packages."),
        click.option("--dry-run", is_flag=True, help="Print what would be created, replaced and left alone."),
        click.option("--yes-really", is_flag=True, help="Allow / (this running system) as the target root."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def restore_options(
    target_root: str,
    *,
    users: str | None,
    maps: tuple[str, ...],
    includes: tuple[str, ...],
    excludes: tuple[str, ...] = (),
    overwrite: str,
    create_missing_accounts: bool,
    fix_fstab: bool,
    no_packages: bool,
    dry_run: bool,
    yes_really: bool,
) -> RestoreOptions:
    from shadowvault.components.files import parse_map

    return RestoreOptions(
        target_root=Path(os.path.abspath(target_root)),  # as named here, also for a restore in the daemon
        users=split_users(users),
        overwrite=overwrite != "never",
        dry_run=dry_run,
        maps=[parse_map(m) for m in maps],
        excludes=list(excludes),
        includes=list(includes),
        create_missing_accounts=create_missing_accounts,
        fix_fstab=fix_fstab,
        install_packages=not no_packages,
        yes_really=yes_really,
    )


def print_plan(plan: Plan, *, as_json: bool, applied: bool) -> None:
    for message in plan.warnings:
        warn(message)
    if as_json:
        print_json({"message_type": "plan", "applied": applied, **plan.to_dict()})
        return
    if not applied:  # a dry run's plan is what was asked for, even under -q
        for line in plan.lines():
            listing(line)
        note("dry run, nothing changed: " + plan.summary())
        return
    for action in plan.actions:  # what was done, in the past tense; files left alone are counted
        if action.verb != "leave" or action.kind not in FILE_KINDS:
            info(action.line(applied=True))
    note("restored " + plan.summary(applied=True))


def report_error(error: dict[str, Any], why: str, *, as_json: bool) -> None:
    """A file a component or writer restore could not lay down, named by its place in the target (a
    step of a plan, `packages`, by what it is), as a files restore names it (cli/restore_report.py)."""
    if "target" not in error:
        warn(f"{error['path']}: {why}")
        return
    path, place = entry_of_fields(error)
    if as_json:
        stderr_json({"message_type": "error", **entry_fields(path, place), "message": why})
    else:
        warn(f"{entry_shown(path, place)}: {why}")


def run_component_restore(
    repo: str | None,
    password_file: str | None,
    snapshot_filter: SnapshotFilter,
    request: ComponentRestoreRequest,
    *,
    as_json: bool,
) -> None:
    """Run the component restore in this process or in the daemon; print its plan and its errors."""

    def here(r: Repository, ref: str) -> dict[str, Any]:
        request.snapshot = ref
        return restore_component_reporting(r, request)

    def there(client: Client, ref: str) -> dict[str, Any]:
        request.snapshot = ref
        return component_restore_through_daemon(client, repo, password_file, request)

    summary = here_or_in_daemon(repo, password_file, request.snapshot, snapshot_filter, here, there)
    print_plan(Plan.from_dict(summary["plan"]), as_json=as_json, applied=summary["applied"])
    for error in summary["errors"]:
        report_error(error, error["reason"], as_json=as_json)
    if summary["errors"]:
        raise PartialFailure(
            f"{counted(len(summary['errors']), 'item')} could not be restored; the others were"
        )
