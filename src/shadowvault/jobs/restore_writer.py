"""The writer restore job: pre_restore -> lay the components' files down -> post_restore, per writer.

The backup manifest stored with a snapshot says which writers took part and what each needs
(backup_label and WAL, binlog position, LDIF, ...). For every writer the plan restores
(jobs/writer_plan.py), its components' paths are restored from the snapshot below the target root
between the writer's pre_restore (stop the application) and post_restore (recover it, start it,
check it), as VSS's restore sequence does. The writer only answers the events; the job lays the
files down. Restore has no abort (as in VSS): a failing writer raises WriterError naming it and
the phase. A cancelled run stops before a writer's pre_restore or while its files are laid down
(each file whole or absent), never inside pre_restore or post_restore; stopped between them, the
writer's application stays as pre_restore left it, and the error says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shadowvault import cancellation
from shadowvault.archive import metadata
from shadowvault.archive.restore import Restorer, RestoreStats
from shadowvault.archive.restore_places import entry_shown
from shadowvault.archive.tree_paths import find_node
from shadowvault.display import counted
from shadowvault.errors import JobCancelledError, NotFoundError, ShadowvaultError, UsageError, WriterError
from shadowvault.jobs.restore_space import check_fits
from shadowvault.jobs.writer_plan import (
    WriterPlan,
    in_snapshot,
    load_manifest,
    plan_writer_restore,
    report_label,
    selected_reports,
    target_path,
)
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.shadow.manifest import WriterReport
from shadowvault.shadow.writers import registry
from shadowvault.shadow.writers.base import RestoreContext, Writer
from shadowvault.shadow.writers.set_aside import set_aside

log = logging.getLogger(__name__)

WriterOptions = dict[str, Any]
# the files a writer's restore could not lay down: (snapshot path, place in the target or None, why)
FileErrors = Callable[[list[tuple[bytes, bytes | None, str]]], None]


@dataclass
class WriterRestoreRequest:
    """Which writers of which snapshot to restore, where, and with which options."""

    snapshot: str  # a snapshot ref: an id, a unique prefix or "latest"
    writers: list[str] = field(default_factory=list)  # NAME or NAME:INSTANCE; empty: every app writer
    target_root: str | None = None  # None or "/": in place; else below this directory
    options: WriterOptions = field(default_factory=dict)  # for every writer
    writer_options: dict[str, WriterOptions] = field(default_factory=dict)  # NAME or NAME:INSTANCE -> options
    overwrite: str = "never"
    dry_run: bool = False


@dataclass
class WriterRestore:
    """What restoring one writer's components did."""

    label: str
    components: list[str]
    paths: list[str]
    # (snapshot path, its place below the target root or None, why) of what could not be restored
    errors: list[tuple[bytes, bytes | None, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how the writer restored (RestoreContext.notes)


@dataclass
class WriterRestoreResult:
    snapshot_id: str
    plans: list[WriterPlan]
    restored: list[WriterRestore]

    @property
    def chosen(self) -> list[str]:
        """The writers the plan restores (or would, on a dry run)."""
        return [p.label for p in self.plans if p.decision == "restore"]

    @property
    def skipped(self) -> list[str]:
        return [p.label for p in self.plans if p.decision != "restore"]


def run_writer_restore(
    repo: Repository,
    request: WriterRestoreRequest,
    *,
    on_plans: Callable[[list[WriterPlan]], None] | None = None,
    on_file_errors: FileErrors | None = None,
) -> WriterRestoreResult:
    """Plan the restore (shown through `on_plans` before anything runs), then, unless a dry run, do it;
    files a writer's restore could not lay down go to `on_file_errors` before its error is raised."""
    snapshot_id, snapshot = repo.find_snapshot(request.snapshot)
    plans = plan_writer_restore(repo, snapshot, request.target_root, list(request.writers) or None)
    per_writer = keyed_by_plan(request.writer_options, [p.label for p in plans])
    if on_plans is not None:
        on_plans(plans)
    result = WriterRestoreResult(snapshot_id, plans, [])
    if request.dry_run and result.chosen:  # what the real restore would refuse, refused now
        target = request.target_root or "/"
        checked_events(repo, snapshot, target, result.chosen, request.options, per_writer)
    elif result.chosen:
        result.restored = restore_with_writers(
            repo,
            snapshot,
            request.target_root or "/",
            writers=result.chosen,
            options=request.options,
            writer_options=per_writer,
            overwrite=request.overwrite,
            on_file_errors=on_file_errors,
        )
    return result


def keyed_by_plan(per_writer: dict[str, WriterOptions], labels: list[str]) -> dict[str, WriterOptions]:
    """Key per-writer options by the manifest's names; a writer not being restored is a typo: say so."""
    names = set(labels) | {label.split(":", 1)[0] for label in labels}
    keyed: dict[str, WriterOptions] = {}
    for writer, values in per_writer.items():
        if f"external:{writer}" in names:  # an external writer by its writers.d name
            writer = f"external:{writer}"
        elif writer not in names:
            restoring = ", ".join(labels)
            raise UsageError(f"--writer-option {writer}.KEY: {writer} is not being restored ({restoring} is)")
        keyed.setdefault(writer, {}).update(values)
    return keyed


def writer_for(report: WriterReport) -> Writer:
    """A writer object able to run the restore events of `report`'s writer on this machine, with
    the writers.d settings of that instance (the credentials post_restore logs in with), as at backup."""
    if report.name == "external":
        return registry.make_writer(str(report.instance))
    return registry.make_writer(report_label(report))


def restore_with_writers(
    repo: Repository,
    snapshot: Snapshot,
    target_root: str = "/",
    *,
    writers: list[str] | None = None,
    options: WriterOptions | None = None,
    writer_options: dict[str, WriterOptions] | None = None,
    overwrite: str = "never",
    on_file_errors: FileErrors | None = None,
) -> list[WriterRestore]:
    """Restore the components of `writers` (default: every writer in the manifest) from `snapshot`.

    `options` go to every writer; `writer_options` maps a writer name or NAME:INSTANCE label to
    options for that writer only (a port to start a restored copy on, a start command, ...). Every
    writer checks its options first, so a refused restore stops nothing and lays nothing down.
    A file not laid down fails the writer's restore (post_restore would start a partial copy): the
    files go to `on_file_errors`, the error names the first by its place below the target root.
    """
    events = checked_events(repo, snapshot, target_root, writers, options, writer_options)
    done = []
    for report, writer, ctx in events:
        label = report_label(report)
        cancellation.check(cancellation.current())  # before a writer stops its application, not after
        try:
            with cancellation.shielded():
                writer.pre_restore(ctx)
        except ShadowvaultError as err:
            raise WriterError(f"writer {label} failed at pre_restore: {err}{_aside_if_any(ctx)}") from err
        except KeyboardInterrupt as stop:
            stop.add_note(f"writer {label} was stopped in pre_restore{_aside_if_any(ctx)}")
            raise
        try:
            result = _lay_down(repo, snapshot, report, ctx, overwrite)
        except JobCancelledError as err:
            writer.restore_stopped(ctx)
            raise JobCancelledError(f"{err}: {stopped_half_way(label, ctx)}") from err
        except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM: the line that ends the command says it
            writer.restore_stopped(ctx)
            stop.add_note(stopped_half_way(label, ctx))
            raise
        except BaseException:
            writer.restore_stopped(ctx)
            raise
        if result.errors:
            writer.restore_stopped(ctx)
            if on_file_errors is not None:
                on_file_errors(result.errors)
            path, place, why = result.errors[0]
            raise WriterError(
                f"writer {label}: {counted(len(result.errors), 'file')} not restored, first "
                f"{entry_shown(path, place)}: {why}; {aside_said(ctx)}"
            )
        try:
            with cancellation.shielded():
                writer.post_restore(ctx)
        except ShadowvaultError as err:
            raise WriterError(f"writer {label} failed at post_restore: {err}{_aside_if_any(ctx)}") from err
        except KeyboardInterrupt as stop:
            stop.add_note(
                f"writer {label} was stopped in post_restore, its files restored{_aside_if_any(ctx)}"
            )
            raise
        result.notes = list(ctx.notes)
        log.info("restored %s: %s", label, ", ".join(result.components))
        done.append(result)
    return done


def aside_said(ctx: RestoreContext) -> str:
    """Where what the restore replaced went: it is the user's way back."""
    if not ctx.moved_aside:
        return "nothing was set aside"
    moves = ", ".join(f"{path} -> {aside}" for path, aside in ctx.moved_aside.items())
    return f"what was there is set aside, not deleted: {moves}"


def _aside_if_any(ctx: RestoreContext) -> str:
    return f"; {aside_said(ctx)}" if ctx.moved_aside else ""


def stopped_half_way(label: str, ctx: RestoreContext) -> str:
    """What a restore stopped between pre_restore and post_restore leaves, for the user."""
    return (
        f"the files of writer {label} are partly restored and its application is left as pre_restore"
        f" left it (post_restore would recover a partial copy); {aside_said(ctx)}: restore it again"
    )


def checked_events(
    repo: Repository,
    snapshot: Snapshot,
    target_root: str,
    writers: list[str] | None,
    options: WriterOptions | None,
    writer_options: dict[str, WriterOptions] | None,
) -> list[tuple[WriterReport, Writer, RestoreContext]]:
    """Each selected writer with the context of its restore events, after its `check_restore` passed
    and the files were found to fit on their target filesystems."""
    if os.path.lexists(target_root) and not os.path.isdir(target_root):  # a dry run would not see it
        raise UsageError(f"--target-root {target_root} is not a directory")
    events = []
    per_writer = writer_options or {}
    for report in selected_reports(load_manifest(repo, snapshot), writers):
        merged = {
            **(options or {}),
            **per_writer.get(report.name, {}),
            **per_writer.get(report_label(report), {}),
        }
        ctx = RestoreContext(components=list(report.components), target_root=target_root, options=merged)
        writer = writer_for(report)
        writer.check_restore(ctx)
        events.append((report, writer, ctx))
    check_fits(repo, snapshot, target_root, [(report_label(report), report) for report, _, _ in events])
    return events


def _lay_down(
    repo: Repository,
    snapshot: Snapshot,
    report: WriterReport,
    ctx: RestoreContext,
    overwrite: str,
) -> WriterRestore:
    """The files of `report`'s components, restored from the snapshot below the target root.

    What is at each path is set aside first, as the plan says (the application writers have done
    it in pre_restore; an external or SQLite writer leaves it to us): restored files never mix with
    newer ones, and a restore never leaves an existing file in place while saying it restored it.
    A path the snapshot does not hold (a -wal that did not exist at backup) is only set aside.
    """
    label = report_label(report)
    result = WriterRestore(label, [c.name for c in report.components], [])
    for component in report.components:
        held = [p for p in component.paths if in_snapshot(repo, snapshot, p)]
        if component.paths and not held:
            raise NotFoundError(f"writer {label}: {component.paths[0]} is not in the snapshot")
        for path in component.paths:
            set_aside(target_path(ctx.target_root, path), ctx)
        for path in held:
            result.paths.append(path)
            node = find_node(repo, snapshot.tree, path)
            if node is None:
                raise NotFoundError(f"writer {label}: {path} is not in the snapshot")
            target = _target(ctx.target_root, path, is_dir=node.type == "dir")
            restorer = Restorer(
                repo, target, overwrite=overwrite, stats=RestoreStats(cancellation=cancellation.current())
            )
            stats = restorer.restore(snapshot.tree, path)
            result.errors.extend((failed, stats.place(failed), why) for failed, why in stats.errors)
            if node.type == "dir":  # the Restorer fills the directory; its own owner and mode are ours
                metadata.apply(os.fsencode(target), node)
    return result


def _target(target_root: str, path: str, *, is_dir: bool) -> str:
    """The directory the Restorer fills for `path`: the path itself for a directory, its parent for a file."""
    below = target_path(target_root, path)
    return below if is_dir else os.path.dirname(below)
