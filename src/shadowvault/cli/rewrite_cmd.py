"""CLI command: rewrite (restic's): snapshots without what was backed up by mistake (parse, call, print).

The work is archive/rewrite.py's; this module reads the patterns (before the password is asked, so
a bad one costs no scrypt), chooses the snapshots and says what was (or would be) removed.
"""

from __future__ import annotations

import click

from shadowvault.archive.path_lists import read_pattern_files
from shadowvault.archive.rewrite import RewriteResult, RewriteRules, RewrittenSnapshot, rewrite_snapshots
from shadowvault.cli.global_options import VERBOSITY
from shadowvault.cli.output import info, json_option, print_json, warn
from shadowvault.cli.repo_options import open_repository, repo_options
from shadowvault.cli.snapshot_choice import SnapshotFilter, choose_all, snapshot_filter_options
from shadowvault.display import display_name, exact_fields, human_size
from shadowvault.errors import PartialFailure

SHOWN_PATHS = 20  # paths named per snapshot on a terminal with -v (--json names up to PATHS_KEPT)


def _entries(n: int) -> str:
    return f"{n} {'entry' if n == 1 else 'entries'}"


def _verbose() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(VERBOSITY, 0))


def _said(item: RewrittenSnapshot, dry_run: bool, as_json: bool) -> None:
    """One snapshot rewritten (or that would be): a JSON line, or a line and, with -v, its paths."""
    removal = item.removal
    if as_json:
        print_json(
            {
                "message_type": "rewritten",
                "dry_run": dry_run,
                "original": item.original,
                "snapshot_id": item.new_id,
                "already_rewritten": item.existing,
                "forgotten": item.forgotten,
                "matched": removal.matched,
                "removed_entries": removal.entries,
                "removed_bytes": removal.bytes,
                "removed": [exact_fields("path", path) for path in removal.paths],
                "removed_truncated": removal.matched > len(removal.paths),
            }
        )
        return
    what = f"{_entries(removal.entries)}, {human_size(removal.bytes)}"
    gone = " (original forgotten)" if item.forgotten else ""
    if item.existing:
        info(f"snapshot {item.original[:8]}: already rewritten as {(item.new_id or '')[:8]}{gone}")
    elif dry_run:
        info(f"snapshot {item.original[:8]}: would remove {what}")
    else:
        info(f"snapshot {item.original[:8]} -> {(item.new_id or '')[:8]}: removed {what}{gone}")
    if _verbose():
        for path in removal.paths[:SHOWN_PATHS]:
            info(f"  {display_name(path)}")
        if removal.matched > SHOWN_PATHS:
            info(f"  ... and {removal.matched - SHOWN_PATHS} more")


def _summary(result: RewriteResult, as_json: bool) -> None:
    entries = sum(item.removal.entries for item in result.rewritten if not item.existing)
    size = sum(item.removal.bytes for item in result.rewritten if not item.existing)
    forgotten = sum(1 for item in result.rewritten if item.forgotten)
    earlier = sum(1 for item in result.rewritten if item.existing)
    if as_json:
        print_json(
            {
                "message_type": "summary",
                "dry_run": result.dry_run,
                "snapshots_checked": result.checked,
                "snapshots_rewritten": len(result.rewritten) - earlier,
                "already_rewritten": earlier,
                "originals_forgotten": forgotten,
                "removed_entries": entries,
                "removed_bytes": size,
                "unreadable": [snapshot_id for snapshot_id, _ in result.unreadable],
                "emptied": result.emptied,
            }
        )
        return
    verb = "would rewrite" if result.dry_run else "rewrote"
    text = f"{verb} {len(result.rewritten) - earlier} of {result.checked} snapshots"
    if len(result.rewritten) > earlier:
        text += f", {_entries(entries)} ({human_size(size)}) removed"
    if earlier:
        text += f" ({earlier} rewritten before)"
    if result.dry_run:
        text += "; dry run: nothing was written"
    elif forgotten:
        text += f"; forgot {forgotten} originals (`shadowvault prune` frees their data)"
    elif result.rewritten:
        text += "; the originals are kept (`--forget` removes them, then `shadowvault prune` frees the data)"
    info(text)


@click.command("rewrite")
@repo_options
@click.argument("refs", nargs=-1, metavar="[SNAP...]")
@click.option("--exclude", "-e", "excludes", multiple=True, metavar="GLOB", help="Remove matching paths.")
@click.option(
    "--exclude-file",
    "exclude_files",
    multiple=True,
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Remove the globs listed in FILE, one a line (the --exclude syntax).",
)
@click.option("--iexclude", "iexcludes", multiple=True, metavar="GLOB", help="Like --exclude, any case.")
@click.option(
    "--iexclude-file",
    "iexclude_files",
    multiple=True,
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Like --exclude-file, any case.",
)
@click.option("--forget", is_flag=True, help="Remove each original once every new snapshot is saved.")
@click.option("--dry-run", "-n", is_flag=True, help="Say what would be removed; write nothing.")
@snapshot_filter_options
@json_option
def rewrite_cmd(
    repo: str | None,
    password_file: str | None,
    refs: tuple[str, ...],
    excludes: tuple[str, ...],
    exclude_files: tuple[str, ...],
    iexcludes: tuple[str, ...],
    iexclude_files: tuple[str, ...],
    forget: bool,
    dry_run: bool,
    snapshot_filter: SnapshotFilter,
    as_json: bool,
) -> None:
    """Write snapshots without the entries the patterns match (default: every snapshot the filters
    pass), restic's rewrite: for a secret or a huge file backed up by mistake.

    Each new snapshot keeps the time, host, paths and tags, adds the tag `rewrite` and records the
    snapshot it replaces as `original`; a snapshot with nothing to remove is left as it is. The
    originals stay unless --forget; `shadowvault prune` then frees the data. Patterns are backup's
    --exclude globs, matched against the paths `ls` shows.
    """
    rules = RewriteRules(
        excludes=(*excludes, *read_pattern_files(exclude_files)),
        iexcludes=(*iexcludes, *read_pattern_files(iexclude_files, "iexclude-file")),
    )
    rules.path_filter()  # a bad pattern fails here, before the password
    # a dry run opens the repository read-only: no session, nothing written
    with open_repository(repo, password_file, write=not dry_run, kind="rewrite") as r:
        chosen = choose_all(r, refs, snapshot_filter)
        result = rewrite_snapshots(
            r,
            chosen,
            rules,
            forget=forget,
            dry_run=dry_run,
            report=lambda item: _said(item, dry_run, as_json),
        )
    for snapshot_id, why in result.unreadable:
        warn(f"snapshot {snapshot_id[:8]} not rewritten: {why}")
    for snapshot_id in result.emptied:
        warn(
            f"snapshot {snapshot_id[:8]} not rewritten: the patterns match everything in it"
            " (kept as it is; `shadowvault forget` removes a whole snapshot)"
        )
    _summary(result, as_json)
    if result.unreadable:
        raise PartialFailure(
            f"{len(result.unreadable)} snapshots could not be read whole and were not rewritten:"
            " run `shadowvault check`, then `shadowvault repair snapshots`"
        )
    if result.emptied:
        raise PartialFailure(f"{len(result.emptied)} snapshots would be left empty and were not rewritten")


COMMANDS: list[click.Command] = [rewrite_cmd]
