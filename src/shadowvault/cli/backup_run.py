"""Running the backup command once its repository is open: the job, its progress, its summary.

Loaded by cli/backup.py only after the repository's key is unlocked (cli/repo_options.py), with the
jobs, shadow and archive modules this brings: scrypt's memory then comes on top of little.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time

import click

from shadowvault.archive.diff import Change, Difference
from shadowvault.archive.item_report import ItemReport
from shadowvault.archive.memory import bound_heap
from shadowvault.archive.tree_paths import text
from shadowvault.archive.walk_stats import WalkStats
from shadowvault.cli.backup_options import BackupArguments
from shadowvault.cli.component_options import split_users
from shadowvault.cli.coordination import shadow_sets
from shadowvault.cli.global_options import VERBOSITY
from shadowvault.cli.output import info, note, print_json, quiet, warn
from shadowvault.cli.progress import progress, shown
from shadowvault.components.base import CollectOptions
from shadowvault.display import counted, escape_text, human_size
from shadowvault.errors import PartialFailure
from shadowvault.jobs.backup import BackupRequest, BackupResult, run_backup
from shadowvault.jobs.backup_components import ComponentSelection, staged_components
from shadowvault.jobs.backup_stdin import run_stdin_backup
from shadowvault.repo.repository import Repository

SHOWN_SKIPS = 20  # skipped entries named on the terminal; --json names up to 100

_VERBS = {
    Change.ADDED: "would add",
    Change.MODIFIED: "would update",
    Change.METADATA: "would update the metadata of",
    Change.REMOVED: "would not keep",
    Change.UNREADABLE: "could not read",
}
_ACTIONS = {
    Change.ADDED: "new",
    Change.MODIFIED: "modified",
    Change.METADATA: "metadata",
    Change.REMOVED: "removed",
    Change.UNREADABLE: "unreadable",
}
_KINDS = {
    "excluded": "by pattern",
    "larger_than": "too large",
    "cache_dir": "cache directories",
    "if_present": "tagged directories",
}


def _item_report(as_json: bool) -> ItemReport | None:
    """With -vv, each file and directory as restic lists them: `new       /srv/a.txt, 6 B` (or a
    `verbose_status` JSON line); None otherwise, and the walk then does no per-file work for it."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.meta.get(VERBOSITY, 0) < 2 or quiet():
        return None

    def report(action: str, item: str, size: int | None) -> None:
        if as_json:
            doc = {"message_type": "verbose_status", "action": action, "item": item}
            print_json(doc if size is None else {**doc, "size": size})
            return
        line = f"{action:<9} {escape_text(item)}" + ("" if size is None else f", {human_size(size)}")
        sys.stdout.write(line + "\n")

    return report


def run_backup_command(repository: Repository, arguments: BackupArguments) -> None:
    """Run the backup `arguments` ask for into the open `repository`, showing progress and printing
    the result; PartialFailure (exit 3) when files could not be read."""
    a = arguments
    request = BackupRequest(
        paths=list(a.paths),
        excludes=list(a.excludes),
        tags=list(a.tags),
        provider=a.provider,
        writers=list(a.writers),
        host=a.host,
        parent=a.parent,
        full=a.force,
        one_file_system=a.one_file_system,
        include_snapshots=a.include_snapshots,
        exclude_larger_than=a.exclude_larger_than,
        exclude_caches=a.exclude_caches,
        exclude_if_present=list(a.restic.exclude_if_present),
        iexcludes=list(a.restic.iexcludes),
        time=a.restic.time,
        ignore_inode=a.restic.ignore_inode,
        ignore_ctime=a.restic.ignore_ctime,
        with_atime=a.restic.with_atime,
        dry_run=a.dry_run,
        count_totals=shown(a.as_json),
    )

    def on_warning(message: str) -> None:
        if a.as_json:
            sys.stderr.write(f'{{"message_type":"warning","message":{_quote(message)}}}\n')
        else:
            warn(message)

    bound_heap()
    stats = WalkStats()
    with contextlib.ExitStack() as stack:
        if a.components:  # what each component collects, plus its documents (jobs/backup_components.py)
            selection = ComponentSelection(
                list(a.components),
                a.source_root,
                CollectOptions(users=split_users(a.users), paths=list(a.paths), excludes=list(a.excludes)),
            )
            request = stack.enter_context(staged_components(request, selection))
        stack.enter_context(progress(lambda: _status(stats), _line, a.as_json, final=True))
        if a.from_stdin:
            result = run_stdin_backup(repository, request, sys.stdin.buffer, a.stdin_filename, stats=stats)
        else:
            on_item = None if a.dry_run else _item_report(a.as_json)  # a dry run lists its changes
            result = run_backup(
                repository, request, stats=stats, on_warning=on_warning, sets=shadow_sets(), on_item=on_item
            )
    _print_result(result, a.as_json, forced=a.force)


def _print_result(result: BackupResult, as_json: bool, *, forced: bool = False) -> None:
    for path, reason in result.file_warnings:
        if as_json:
            sys.stderr.write(
                f'{{"message_type":"warning","path":{_quote(path)},"message":{_quote(reason)}}}\n'
            )
        else:
            warn(f"{path}: {reason}")
    for path, reason in result.errors:
        if as_json:
            sys.stderr.write(f'{{"message_type":"error","path":{_quote(path)},"error":{_quote(reason)}}}\n')
        else:
            warn(f"{path}: {reason}")
    summary = result.summary()
    _print_changes(result.changes, as_json)
    if as_json:
        print_json({"message_type": "summary", **summary})
    else:
        s = result.stats
        _print_skips(s)
        note(_parent_line(result.snapshot.parent, forced))
        note(
            f"files: {s.files_new} new, {s.files_changed} changed, {s.files_unmodified} unmodified; "
            f"dirs: {s.dirs}; read {_human_size(s.bytes_read)} of {_human_size(s.bytes_total)}, "
            f"added {_human_size(result.added_bytes)} in {result.duration:.2f}s"
            + (f"; freeze window {result.freeze_window * 1000:.0f} ms" if result.freeze_window else "")
        )
        consistency = ", ".join(f"{k}={v}" for k, v in result.snapshot.consistency.items())
        note(f"consistency: {consistency}")
        if result.dry_run:
            note("dry run: nothing was saved to the repository")
        else:
            info(f"snapshot {result.snapshot_id[:8]} saved")
    if result.errors:
        raise PartialFailure(
            f"{counted(len(result.errors), 'file')} could not be read; the snapshot has the rest"
        )


def _parent_line(parent: str | None, forced: bool) -> str:
    """Which snapshot the unchanged files came from (restic says it too): a user who expected an
    incremental and got a full read sees why."""
    if parent:
        return f"using parent snapshot {parent[:8]}"
    if forced:
        return "--force: every file was read, no parent snapshot used"
    return "no parent snapshot of these paths on this host: every file was read"


def _print_changes(changes: list[Difference], as_json: bool) -> None:
    """What a dry run would change, one line each (restic's verbose_status lines under --json)."""
    for change in changes:
        if as_json:
            print_json(
                {
                    "message_type": "verbose_status",
                    "action": _ACTIONS[change.change],
                    "item": text(change.path),
                }
            )
        else:
            info(f"{_VERBS[change.change]} {text(change.path)}")


def _print_skips(stats: WalkStats) -> None:
    """What the exclude rules left out, for a person: the surprising ones by name, then a count."""
    if not stats.skipped:
        return
    named = [(path, reason) for path, kind, reason in stats.skipped_paths if kind != "excluded"]
    for path, reason in named[:SHOWN_SKIPS]:
        note(f"skipped {path}: {reason}")
    total_named = sum(n for kind, n in stats.skipped.items() if kind != "excluded")
    if total_named > SHOWN_SKIPS:
        note(f"... and {total_named - SHOWN_SKIPS} more (--json names them)")
    counts = ", ".join(f"{n} {_KINDS.get(kind, kind)}" for kind, n in sorted(stats.skipped.items()))
    note(f"skipped {sum(stats.skipped.values())} ({counts})")


def _status(stats: WalkStats) -> dict:
    """Done and total (the scan's totals grow until it finishes), the rate, and the time left."""
    with stats.lock:
        now = time.monotonic()
        elapsed = now - stats.started
        walking = 0.0 if stats.shadowing else now - stats.walk_started
        total_files = max(stats.scan_files, stats.files_done)
        total_bytes = max(stats.scan_bytes, stats.bytes_done)
        rate = stats.bytes_done / walking if walking > 0 else 0.0  # the freeze window is no reading
        if total_bytes:
            percent = stats.bytes_done / total_bytes
        else:
            percent = stats.files_done / total_files if total_files else float(stats.scan_finished)
        left = total_bytes - stats.bytes_done
        remaining = (left / rate if rate > 0 else None) if left else 0.0
        return {
            "message_type": "status",
            "phase": "shadow set" if stats.shadowing else "reading",
            "seconds_elapsed": round(elapsed, 1),
            "seconds_remaining": round(remaining) if stats.scan_finished and remaining is not None else None,
            "percent_done": round(percent, 4),
            "files_done": stats.files_done,
            "total_files": total_files,
            "bytes_done": stats.bytes_done,
            "total_bytes": total_bytes,
            "bytes_per_second": round(rate),
            "scan_finished": stats.scan_finished,
            "bytes_total": stats.bytes_total,  # of the files walked so far
            "bytes_read": stats.bytes_read,
            "errors": len(stats.errors),
            "current_file": stats.current,
        }


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def _line(s: dict) -> str:
    from rich.markup import escape as escape_markup  # only a terminal shows this line

    # shown by rich.live, which reads markup: a name like "[/x]" must stay text
    current = escape_markup(escape_text(s["current_file"])[-50:])
    if s["phase"] != "reading":  # writers prepare and freeze, providers make their images
        return f"[{_clock(s['seconds_elapsed'])}] taking the shadow set (writers, then snapshots) ..."
    more = "" if s["scan_finished"] else "+"  # the scan is still counting
    eta = _clock(s["seconds_remaining"]) if s["seconds_remaining"] is not None else "--:--"
    return (
        f"[{_clock(s['seconds_elapsed'])}] {s['percent_done'] * 100:.1f}%  "
        f"{s['files_done']} / {s['total_files']}{more} files  "
        f"{_human_size(s['bytes_done'])} / {_human_size(s['total_bytes'])}{more}  "
        f"{_human_size(s['bytes_per_second'])}/s  ETA {eta}  {s['errors']} errors  {current}"
    )


def _human_size(n: int | None) -> str:
    return "?" if n is None else human_size(n)


def _quote(value: str) -> str:
    return json.dumps(value)
