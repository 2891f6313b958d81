"""CLI commands: check, prune, repair (parse options, call the library, print)."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from shadowvault.archive.exclude_rules import parse_size
from shadowvault.archive.memory import bound_heap
from shadowvault.cli.output import emit, info, json_option, listing, note, print_json, quiet
from shadowvault.cli.repair import repair_group
from shadowvault.cli.repo_options import open_repository, repo_options
from shadowvault.errors import IntegrityError, UsageError
from shadowvault.repo.check import check
from shadowvault.repo.prune import PruneResult, prune


@contextlib.contextmanager
def _tty_progress() -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar on stderr when it is a terminal; None (no output) otherwise."""
    if quiet() or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, TaskID

    tasks: dict[str, TaskID] = {}
    with Progress(console=Console(stderr=True), transient=True) as bar:

        def show(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done + 1, total=total)

        yield show


def _parse_subset(value: str | None) -> dict[str, Any]:
    """check()'s arguments for the option: '10%' -> a random tenth of the packs; '2/5' -> the second
    of five fixed groups; '500M' -> random packs making about 500 MiB (restic's three forms)."""
    if value is None:
        return {}
    group = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if group and 1 <= int(group.group(1)) <= int(group.group(2)):
        return {"read_data_group": (int(group.group(1)), int(group.group(2)))}
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
    if match and 0 < float(match.group(1)) <= 100:
        return {"read_data_fraction": float(match.group(1)) / 100}
    size = None if "/" in value or "%" in value else _subset_size(value)
    if not size:
        raise UsageError(
            "--read-data-subset takes a percentage like 10%, a group like 2/5 or a size like 500M,"
            f" not {value!r}"
        )
    return {"read_data_bytes": size}


def _subset_size(value: str) -> int | None:
    """The bytes of a size form (backup's --exclude-larger-than units), or None when it is not one."""
    try:
        return parse_size(value, "--read-data-subset")
    except UsageError:
        return None


@click.command("check")
@repo_options
@click.option("--read-data", is_flag=True, help="Read every pack and verify every blob.")
@click.option(
    "--read-data-subset",
    default=None,
    metavar="N%|n/t|SIZE",
    help="Read and verify N% of the packs (random), group n of t, or random packs making SIZE (500M).",
)
@json_option
def check_cmd(
    repo: str | None, password_file: str | None, read_data: bool, read_data_subset: str | None, as_json: bool
) -> None:
    """Check that every snapshot can be restored; with --read-data, verify all stored data."""
    if read_data and read_data_subset is not None:  # which was meant cannot be told (restic refuses too)
        raise UsageError("--read-data reads everything, --read-data-subset a part: give one of them")
    subset = {"read_data_fraction": 1.0} if read_data else _parse_subset(read_data_subset)
    bound_heap()
    with open_repository(repo, password_file) as r, _tty_progress() as progress:
        report = check(r, **subset, progress=progress)
    if as_json:
        print_json(
            {
                "message_type": "summary",
                **dataclasses.asdict(report),
                "ok": report.ok,
                "summary": report.summary(),
            }
        )
    else:
        for line in report.errors:
            listing(f"error: {line}")  # shown under --quiet too
        for sid, problems in sorted(report.affected_snapshots.items()):
            listing(
                f"snapshot {sid[:8]} is affected: {problems[0]}"
                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
            )
        for line in report.warnings:
            note(line)
        info(report.summary())
    if not report.ok:
        raise IntegrityError(report.summary())


def prune_json(result: PruneResult) -> dict:
    """prune's --json summary (forget --prune's `prune`)."""
    return {"message_type": "summary", **dataclasses.asdict(result), "summary": result.summary()}


@click.command("prune")
@repo_options
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would be deleted.")
@json_option
def prune_cmd(repo: str | None, password_file: str | None, dry_run: bool, as_json: bool) -> None:
    """Delete data no snapshot references (safe while backups run)."""
    bound_heap()
    with open_repository(repo, password_file, write=True, kind="prune") as r:
        result = prune(r, dry_run=dry_run)
    emit(as_json, prune_json(result), lambda: info(result.summary()))


COMMANDS: list[click.Command] = [check_cmd, prune_cmd, repair_group]
