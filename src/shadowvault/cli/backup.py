"""CLI command: backup (parse options, show progress, print the summary)."""

from __future__ import annotations

import contextlib
import sys
import time

import click

from shadowvault.archive.exclude_rules import parse_size
from shadowvault.archive.memory import bound_heap
from shadowvault.archive.walk_stats import WalkStats
from shadowvault.cli.backup_options import (
    backup_selection_options,
    listed_excludes,
    listed_paths,
    print_changes,
    print_skips,
)
from shadowvault.cli.component_options import backup_component_options, split_users
from shadowvault.cli.coordination import shadow_sets
from shadowvault.cli.output import info, json_option, note, print_json, warn
from shadowvault.cli.progress import progress, shown
from shadowvault.cli.repo_options import open_repository, repo_options
from shadowvault.components.base import CollectOptions
from shadowvault.display import escape_text
from shadowvault.errors import PartialFailure, UsageError
from shadowvault.jobs.backup import BackupRequest, run_backup
from shadowvault.jobs.backup_components import ComponentSelection, staged_components
from shadowvault.jobs.backup_stdin import run_stdin_backup
from shadowvault.jobs.shadowing import NO_PROVIDER
from shadowvault.shadow.providers.registry import provider_names

PROVIDERS = ["auto", *provider_names(), NO_PROVIDER]  # none: read the live files, no shadow set


def _status(stats: WalkStats) -> dict:
    """Done and total (the scan's totals grow until it finishes), the rate, and the time left."""
    with stats.lock:
        elapsed = time.monotonic() - stats.started
        total_files = max(stats.scan_files, stats.files_done)
        total_bytes = max(stats.scan_bytes, stats.bytes_done)
        rate = stats.bytes_done / elapsed if elapsed > 0 else 0.0
        if total_bytes:
            percent = stats.bytes_done / total_bytes
        else:
            percent = stats.files_done / total_files if total_files else float(stats.scan_finished)
        left = total_bytes - stats.bytes_done
        remaining = (left / rate if rate > 0 else None) if left else 0.0
        return {
            "message_type": "status",
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
    more = "" if s["scan_finished"] else "+"  # the scan is still counting
    eta = _clock(s["seconds_remaining"]) if s["seconds_remaining"] is not None else "--:--"
    return (
        f"[{_clock(s['seconds_elapsed'])}] {s['percent_done'] * 100:.1f}%  "
        f"{s['files_done']} / {s['total_files']}{more} files  "
        f"{_human_size(s['bytes_done'])} / {_human_size(s['total_bytes'])}{more}  "
        f"{_human_size(s['bytes_per_second'])}/s  ETA {eta}  {s['errors']} errors  {current}"
    )


def _human_size(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


@click.command("backup")
@repo_options
@click.argument("paths", nargs=-1, required=False)
@click.option("--exclude", "excludes", multiple=True, metavar="GLOB", help="Leave out matching paths.")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Tag the snapshot (repeatable).")
@click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default="auto",
    show_default=True,
    help="How volumes are shadowed; `none` reads the live files without a shadow set.",
)
@click.option("--writer", "writers", multiple=True, metavar="NAME[:INSTANCE]", help="Writer to include.")
@click.option("--host", default=None, help="Host name to record (default: this machine's).")
@click.option("--parent", default=None, metavar="SNAP", help="Compare against this snapshot.")
@click.option("--force", is_flag=True, help="Read every file, ignoring the parent snapshot.")
@click.option(
    "--one-file-system",
    "-x",
    is_flag=True,
    help="Do not read the filesystems mounted below PATHS (each one skipped is named).",
)
@backup_selection_options
@backup_component_options
@json_option
def backup_cmd(
    repo: str | None,
    password_file: str | None,
    paths: tuple[str, ...],
    excludes: tuple[str, ...],
    tags: tuple[str, ...],
    provider: str,
    writers: tuple[str, ...],
    host: str | None,
    parent: str | None,
    force: bool,
    one_file_system: bool,
    dry_run: bool,
    files_from: tuple[str, ...],
    files_from_verbatim: tuple[str, ...],
    files_from_raw: tuple[str, ...],
    exclude_files: tuple[str, ...],
    exclude_caches: bool,
    exclude_larger_than: str | None,
    from_stdin: bool,
    stdin_filename: str,
    components: tuple[str, ...],
    source_root: str,
    users: str | None,
    as_json: bool,
) -> None:
    """Back up PATHS into the repository, reading a shadow set where the volumes allow it.

    Unreadable files are reported and skipped; the snapshot is saved and the exit code is 3.
    A filesystem mounted below PATHS is read through its own shadow (unless --one-file-system);
    kernel filesystems (proc, sysfs, ...) are never read. What is skipped is named, and noted in
    the backup manifest. Exclude rules (--exclude, --exclude-file, --exclude-caches,
    --exclude-larger-than) are counted in the summary as skipped. --dry-run reads and chunks
    everything and lists what would change, and writes nothing to the repository.
    """
    larger_than = parse_size(exclude_larger_than) if exclude_larger_than is not None else None
    if from_stdin and (paths or files_from or files_from_verbatim or files_from_raw or components):
        raise UsageError("--stdin stores what is piped in: no PATHS, --files-from or --component with it")
    paths = (*paths, *listed_paths(files_from, files_from_verbatim, files_from_raw))
    excludes = (*excludes, *listed_excludes(exclude_files))
    request = BackupRequest(
        paths=list(paths),
        excludes=list(excludes),
        tags=list(tags),
        provider=provider,
        writers=list(writers),
        host=host,
        parent=parent,
        full=force,
        one_file_system=one_file_system,
        exclude_larger_than=larger_than,
        exclude_caches=exclude_caches,
        dry_run=dry_run,
        count_totals=shown(as_json),
    )

    def on_warning(message: str) -> None:
        if as_json:
            sys.stderr.write(f'{{"message_type":"warning","message":{_quote(message)}}}\n')
        else:
            warn(message)

    bound_heap()
    stats = WalkStats()
    with contextlib.ExitStack() as stack:
        if components:  # what each component collects, plus its documents (jobs/backup_components.py)
            selection = ComponentSelection(
                list(components),
                source_root,
                CollectOptions(users=split_users(users), paths=list(paths), excludes=list(excludes)),
            )
            request = stack.enter_context(staged_components(request, selection))
        elif not paths and not from_stdin:
            raise UsageError("give the PATHS to back up, or --component NAME")
        if from_stdin and sys.stdin.isatty():
            raise UsageError("--stdin reads what is piped in, and stdin is a terminal")
        r = stack.enter_context(open_repository(repo, password_file, write=not dry_run))
        stack.enter_context(progress(lambda: _status(stats), _line, as_json, final=True))
        if from_stdin:
            result = run_stdin_backup(r, request, sys.stdin.buffer, stdin_filename, stats=stats)
        else:
            result = run_backup(r, request, stats=stats, on_warning=on_warning, sets=shadow_sets())
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
    print_changes(result.changes, as_json)
    if as_json:
        print_json({"message_type": "summary", **summary})
    else:
        s = result.stats
        print_skips(s)
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
        raise PartialFailure(f"{len(result.errors)} file(s) could not be read; the snapshot has the rest")


def _quote(text: str) -> str:
    import json

    return json.dumps(text)


COMMANDS: list[click.Command] = [backup_cmd]
