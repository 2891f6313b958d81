"""CLI commands: check, forget, prune (parse options, call the library, print)."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from shadowvault.archive.memory import bound_heap
from shadowvault.cli.forget_options import forget_within_options, within_durations
from shadowvault.cli.output import emit, info, json_option, listing, note, print_json, print_table, quiet
from shadowvault.cli.repair import repair_group
from shadowvault.cli.repo_options import open_repository, repo_options
from shadowvault.cli.repository import format_time
from shadowvault.display import counted
from shadowvault.errors import IntegrityError, UsageError
from shadowvault.repo.check import check
from shadowvault.repo.forget import KeepPolicy, apply_policy
from shadowvault.repo.prune import PruneResult, prune
from shadowvault.repo.repository import Repository, filter_snapshots
from shadowvault.repo.retention_groups import parse_group_by
from shadowvault.repo.snapshot import Snapshot


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


def _parse_subset(value: str | None) -> tuple[float, tuple[int, int] | None]:
    """'10%' -> a random tenth of the packs; '2/5' -> the second of five fixed groups."""
    if value is None:
        return 0.0, None
    group = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if group and 1 <= int(group.group(1)) <= int(group.group(2)):
        return 0.0, (int(group.group(1)), int(group.group(2)))
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
    if not match or not 0 < float(match.group(1)) <= 100:
        raise UsageError(f"--read-data-subset takes a percentage like 10% or a group like 2/5, not {value!r}")
    return float(match.group(1)) / 100, None


@click.command("check")
@repo_options
@click.option("--read-data", is_flag=True, help="Read every pack and verify every blob.")
@click.option(
    "--read-data-subset",
    default=None,
    metavar="N%|n/t",
    help="Read and verify N% of the packs (random), or group n of t.",
)
@json_option
def check_cmd(
    repo: str | None, password_file: str | None, read_data: bool, read_data_subset: str | None, as_json: bool
) -> None:
    """Check that every snapshot can be restored; with --read-data, verify all stored data."""
    fraction, group = (1.0, None) if read_data else _parse_subset(read_data_subset)
    bound_heap()
    with open_repository(repo, password_file) as r, _tty_progress() as progress:
        report = check(r, read_data_fraction=fraction, read_data_group=group, progress=progress)
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


def _prune_json(result: PruneResult) -> dict:
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
    emit(as_json, _prune_json(result), lambda: info(result.summary()))


def _named_snapshot(repo: Repository, ref: str) -> tuple[str, Snapshot | None]:
    """A snapshot named on the command line; None for its content when the file is damaged (a
    damaged snapshot can still be forgotten by its id)."""
    if ref == "latest":
        return repo.find_snapshot(ref)
    snapshot_id = repo.resolve_snapshot_id(ref)
    try:
        return snapshot_id, repo.load_snapshot(snapshot_id)
    except IntegrityError:
        return snapshot_id, None


@click.command("forget")
@repo_options
@click.option("--keep-last", type=int, default=0, help="Keep the N most recent snapshots.")
@click.option("--keep-hourly", type=int, default=0, help="Keep the newest snapshot of each of N hours.")
@click.option("--keep-daily", type=int, default=0, help="Keep the newest snapshot of each of N days.")
@click.option("--keep-weekly", type=int, default=0, help="Keep the newest snapshot of each of N weeks.")
@click.option("--keep-monthly", type=int, default=0, help="Keep the newest snapshot of each of N months.")
@click.option("--keep-yearly", type=int, default=0, help="Keep the newest snapshot of each of N years.")
@click.option("--keep-tag", "keep_tags", multiple=True, help="Keep every snapshot with this tag.")
@forget_within_options
@click.option("--host", default=None, help="Only consider snapshots of this host.")
@click.option("--path", "paths", multiple=True, help="Only consider snapshots of this path.")
@click.option("--tag", "tags", multiple=True, help="Only consider snapshots with this tag.")
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would be removed.")
@click.option("--prune", "then_prune", is_flag=True, help="Prune afterwards.")
@click.argument("snapshot_ids", nargs=-1)
@json_option
def forget_cmd(
    repo: str | None,
    password_file: str | None,
    keep_last: int,
    keep_hourly: int,
    keep_daily: int,
    keep_weekly: int,
    keep_monthly: int,
    keep_yearly: int,
    keep_tags: tuple[str, ...],
    keep_within: str | None,
    within_hourly: str | None,
    within_daily: str | None,
    within_weekly: str | None,
    within_monthly: str | None,
    within_yearly: str | None,
    group_by: str,
    host: str | None,
    paths: tuple[str, ...],
    tags: tuple[str, ...],
    dry_run: bool,
    then_prune: bool,
    snapshot_ids: tuple[str, ...],
    as_json: bool,
) -> None:
    """Remove snapshots by id, or by a retention policy (restic's --keep-* semantics).

    The policy applies to each group of snapshots (--group-by, default host,paths); --keep-within
    durations count back from the newest snapshot of the group.
    """
    durations = within_durations(
        keep_within,
        within_hourly=within_hourly,
        within_daily=within_daily,
        within_weekly=within_weekly,
        within_monthly=within_monthly,
        within_yearly=within_yearly,
    )
    grouping = parse_group_by(group_by)
    policy = KeepPolicy(
        keep_last,
        keep_hourly,
        keep_daily,
        keep_weekly,
        keep_monthly,
        keep_yearly,
        tuple(keep_tags),
        **durations,
    )
    for name, count in policy.counts().items():
        if count < -1:
            raise UsageError(f"--keep-{name} must be -1 (unlimited) or more")
    if policy.is_empty() and not snapshot_ids:
        raise UsageError("no policy given: use --keep-* options or name snapshots to forget")
    if snapshot_ids and not policy.is_empty():
        raise UsageError("give either snapshot ids or --keep-* options, not both")
    with open_repository(repo, password_file) as r:
        if snapshot_ids:
            chosen = [_named_snapshot(r, ref) for ref in snapshot_ids]
            groups_json: list[dict[str, Any]] = [
                {
                    "remove": [
                        {"id": sid, "time": s.time if s else None, "damaged": s is None} for sid, s in chosen
                    ]
                }
            ]
            to_remove = [sid for sid, _ in chosen]
            human_rows = [
                (sid[:8], format_time(s.time), s.host, ", ".join(s.paths), "remove", "")
                if s
                else (sid[:8], "", "", "", "remove", "damaged")
                for sid, s in chosen
            ]
        else:
            snapshots = filter_snapshots(r.list_snapshots(), paths=paths, host=host, tags=tags)
            groups = apply_policy(snapshots, policy, group_by=grouping)
            to_remove = [d.snapshot_id for g in groups for d in g.decisions if not d.keep]
            groups_json = [
                {
                    "host": g.host,
                    "paths": g.paths,
                    "group_key": g.key.as_dict() if g.key else None,
                    "keep": [
                        {"id": d.snapshot_id, "time": d.snapshot.time, "reasons": d.reasons}
                        for d in g.decisions
                        if d.keep
                    ],
                    "remove": [
                        {"id": d.snapshot_id, "time": d.snapshot.time} for d in g.decisions if not d.keep
                    ],
                }
                for g in groups
            ]
            human_rows = [
                (
                    d.snapshot_id[:8],
                    format_time(d.snapshot.time),
                    d.snapshot.host,
                    ", ".join(d.snapshot.paths),
                    "keep" if d.keep else "remove",
                    ", ".join(d.reasons),
                )
                for g in groups
                for d in g.decisions
            ]
        if not dry_run:
            for sid in to_remove:
                r.remove_snapshot(sid)
    pruned = None
    if then_prune and not dry_run and to_remove:
        bound_heap()
        with open_repository(repo, password_file, write=True, kind="prune") as r:
            pruned = prune(r)

    def human() -> None:
        print_table(["ID", "Time", "Host", "Paths", "Action", "Reasons"], human_rows)
        verb = "would remove" if dry_run else "removed"
        info(f"{verb} {counted(len(to_remove), 'snapshot')}")
        if pruned is not None:
            info(pruned.summary())

    emit(
        as_json,
        {
            "message_type": "summary",
            "dry_run": dry_run,
            "groups": groups_json,
            "removed": [] if dry_run else to_remove,
            "prune": _prune_json(pruned) if pruned else None,
        },
        human,
    )


COMMANDS: list[click.Command] = [check_cmd, forget_cmd, prune_cmd, repair_group]
