"""CLI command: forget (snapshots by id, or by a retention policy per group; cli/forget_report.py
prints the decisions)."""

from __future__ import annotations

import click

from shadowvault.archive.memory import bound_heap
from shadowvault.cli.forget_options import forget_within_options, within_durations
from shadowvault.cli.forget_report import named_report, policy_reports, print_reports, reports_json
from shadowvault.cli.maintenance import prune_json
from shadowvault.cli.output import emit, info, json_option
from shadowvault.cli.repo_options import open_repository, repo_options
from shadowvault.errors import IntegrityError, UsageError
from shadowvault.repo.forget import KeepPolicy, apply_policy
from shadowvault.repo.prune import prune
from shadowvault.repo.repository import Repository, filter_snapshots
from shadowvault.repo.retention_groups import parse_group_by
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.snapshot_choice import normalize_filter_path


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
@click.option(
    "--keep-tag",
    "keep_tags",
    multiple=True,
    help="Keep every snapshot with this tag (TAG,TAG,...: with all of these). Repeatable.",
)
@forget_within_options
@click.option("--host", "hosts", multiple=True, help="Only consider snapshots of this host (repeatable).")
@click.option("--path", "paths", multiple=True, help="Only consider snapshots of this path.")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    help="Only consider snapshots with this tag (TAG,TAG,...: all of these; repeatable: any of the lists).",
)
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
    hosts: tuple[str, ...],
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
            named = dict(_named_snapshot(r, ref) for ref in snapshot_ids)  # each once, however named
            reports = named_report(list(named.items()))
        else:
            given = [normalize_filter_path(p) for p in paths]
            snapshots = filter_snapshots(r.list_snapshots(), paths=given, hosts=hosts, tags=tags)
            reports = policy_reports(apply_policy(snapshots, policy, group_by=grouping))
        to_remove = [item.snapshot_id for report in reports for item in report.remove]
        if not dry_run:
            for sid in to_remove:
                r.remove_snapshot(sid)
    pruned = None
    if then_prune and not dry_run and to_remove:
        bound_heap()
        with open_repository(repo, password_file, write=True, kind="prune") as r:
            pruned = prune(r)

    def human() -> None:
        if not snapshot_ids:
            info(f"applying policy: {policy.describe()}")
            info("")
        print_reports(reports, dry_run=dry_run)
        if pruned is not None:
            info(pruned.summary())

    emit(
        as_json,
        {
            "message_type": "summary",
            "dry_run": dry_run,
            "policy": None if snapshot_ids else policy.describe(),
            "groups": reports_json(reports),
            "removed": [] if dry_run else to_remove,
            "prune": prune_json(pruned) if pruned else None,
        },
        human,
    )


COMMANDS: list[click.Command] = [forget_cmd]
