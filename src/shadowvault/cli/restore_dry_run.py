"""`restore SNAP --target DIR --dry-run`: what a files restore would create, replace and keep.

One line per entry (`create`, `replace`, `keep`, `skip` and the path in the target it would be
written to, which is what a user checks before a restore; under --json restic's `verbose_status`
lines, with `target` and the snapshot's `path`), then a summary; nothing in the target is written or
followed (archive/restore_preview.py).
"""

from __future__ import annotations

from shadowvault.archive.listing import display, path_fields
from shadowvault.archive.patterns import PathFilter
from shadowvault.archive.restore_preview import CREATE, KEEP, REPLACE, PreviewCounts, preview_restore
from shadowvault.cli.output import info, listing, print_json
from shadowvault.cli.repo_options import open_repository
from shadowvault.cli.snapshot_choice import SnapshotFilter, choose
from shadowvault.display import counted, exact_fields, human_size
from shadowvault.errors import PartialFailure, RepositoryError


def preview_files_restore(
    repo: str | None,
    password_file: str | None,
    ref: str,
    subpath: str,
    snapshot_filter: SnapshotFilter,
    target: str,
    *,
    includes: list[str],
    excludes: list[str],
    overwrite: str,
    as_json: bool,
    iincludes: tuple[str, ...] = (),
    iexcludes: tuple[str, ...] = (),
) -> None:
    """Print what the restore would do, entry by entry, and its totals."""
    counts = PreviewCounts()
    with open_repository(repo, password_file) as r:
        snapshot_id, snapshot = choose(r, ref, snapshot_filter, subpath=subpath)
        entries = preview_restore(
            r,
            snapshot.tree,
            subpath,
            target,
            path_filter=PathFilter(includes, excludes, iincludes=iincludes, iexcludes=iexcludes),
            overwrite=overwrite,
        )
        for entry in entries:
            counts.add(entry)
            if as_json:
                line = {"message_type": "verbose_status", "action": entry.action, **path_fields(entry.path)}
                line.update(exact_fields("target", entry.place))
                print_json({**line, "type": entry.type, "size": entry.size, "reason": entry.reason})
                continue
            reason = f"  ({entry.reason})" if entry.reason else ""
            listing(f"{entry.action:<8} {entry.type:<8} {display(entry.place)}{reason}")
    totals = counts.entries
    if as_json:
        print_json(
            {
                "message_type": "summary",
                "dry_run": True,
                "snapshot_id": snapshot_id,
                **{f"entries_{action}": n for action, n in totals.items()},
                "bytes_to_write": counts.bytes_written,
                "errors": counts.failures,
            }
        )
    else:
        failing = f" ({counts.failures} would fail)" if counts.failures else ""
        info(
            f"dry run, nothing changed: snapshot {snapshot_id[:8]} into {target}: {totals[CREATE]} to"
            f" create, {totals[REPLACE]} to replace ({human_size(counts.bytes_written)} to write),"
            f" {totals['keep']} kept, {totals['skip']} skipped{failing}"
        )
    _exit_as_the_restore_would(counts)


def _exit_as_the_restore_would(counts: PreviewCounts) -> None:
    """A preview that foresees errors exits as the restore would (cli/restore.py): 3 when some
    entries would fail, 1 when nothing at all would be restored."""
    if not counts.failures:
        return
    would = counted(counts.failures, "item")
    if not (counts.entries[CREATE] or counts.entries[REPLACE] or counts.entries[KEEP]):
        raise RepositoryError(f"dry run: nothing would be restored: {would} could not be")
    raise PartialFailure(f"dry run: {would} could not be restored; the others could")
