"""Restore through writers: pre_restore -> lay the components' files down -> post_restore.

The backup manifest stored with a snapshot says which writers took part and what each needs
(backup_label and WAL, binlog position, LDIF, ...). For every writer selected, its components'
paths are restored from the snapshot below `target_root` between the writer's pre_restore (stop the
application) and post_restore (recover it, start it, check it), as VSS's restore sequence does.
Restore has no abort (vss.md 1.4): a failing writer raises WriterError naming it and the phase.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from shadowvault.errors import NotFoundError, ShadowvaultError, UsageError, WriterError
from shadowvault.shadow import manifest as manifest_doc
from shadowvault.shadow.manifest import ShadowSetManifest, WriterReport
from shadowvault.shadow.writers.base import RestoreContext, Writer

log = logging.getLogger(__name__)


@dataclass
class WriterRestore:
    """What restoring one writer's components did."""

    label: str
    components: list[str]
    paths: list[str]
    errors: list[tuple[str, str]] = field(default_factory=list)


def load_manifest(repo: Any, snapshot: Any) -> ShadowSetManifest:
    """The backup manifest saved with `snapshot` (a snapshot made without a shadow set has none)."""
    if not getattr(snapshot, "manifest", None):
        raise NotFoundError("this snapshot has no backup manifest (it was not made through a shadow set)")
    return manifest_doc.decode(repo.load_blob(snapshot.manifest))


def writer_for(report: WriterReport) -> Writer:
    """A writer object able to run the restore events of `report`'s writer on this machine."""
    from shadowvault.shadow.writers import registry

    if report.name == "external":
        return registry.make_writer(str(report.instance))
    return registry.writer_class(report.name)(report.instance)


def report_label(report: WriterReport) -> str:
    """`name` or `name:instance`, as users name writers."""
    return f"{report.name}:{report.instance}" if report.instance else report.name


def selected_reports(manifest: ShadowSetManifest, wanted: list[str] | None) -> list[WriterReport]:
    """The application writers of `manifest` that `wanted` names (all of them when it names none)."""
    reports = [r for r in manifest.writers if r.components and not getattr(r, "freezes_filesystems", False)]
    if not wanted:
        return [r for r in reports if r.name not in ("fsfreeze",)]
    chosen = []
    for spec in wanted:
        matches = [r for r in reports if spec in (r.name, report_label(r))]
        if not matches:
            known = ", ".join(report_label(r) for r in reports) or "none"
            raise UsageError(f"writer {spec!r} is not in this snapshot's manifest (it has: {known})")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def restore_with_writers(
    repo: Any,
    snapshot: Any,
    target_root: str = "/",
    *,
    writers: list[str] | None = None,
    options: dict[str, Any] | None = None,
    writer_options: dict[str, dict[str, Any]] | None = None,
    overwrite: str = "never",
) -> list[WriterRestore]:
    """Restore the components of `writers` (default: every writer in the manifest) from `snapshot`.

    `options` go to every writer; `writer_options` maps a writer name or NAME:INSTANCE label to
    options for that writer only (a port to start a restored copy on, a start command, ...).
    """
    from shadowvault.archive import metadata
    from shadowvault.archive.restore import Restorer, find_node

    manifest = load_manifest(repo, snapshot)
    done = []
    for report in selected_reports(manifest, writers):
        label = report_label(report)
        writer = writer_for(report)
        per_writer = writer_options or {}
        merged = {**(options or {}), **per_writer.get(report.name, {}), **per_writer.get(label, {})}
        ctx = RestoreContext(components=list(report.components), target_root=target_root, options=merged)
        try:
            writer.pre_restore(ctx)
        except ShadowvaultError as err:
            raise WriterError(f"writer {label} failed at pre_restore: {err}") from err
        result = WriterRestore(label, [c.name for c in report.components], [])
        for component in report.components:
            for path in component.paths:
                result.paths.append(path)
                node = find_node(repo, snapshot.tree, path)
                if node is None:
                    raise NotFoundError(f"writer {label}: {path} is not in the snapshot")
                target = _target(target_root, path, is_dir=node.type == "dir")
                stats = Restorer(repo, target, overwrite=overwrite).restore(snapshot.tree, path)
                result.errors.extend(getattr(stats, "errors", []) or [])
                if node.type == "dir":  # the Restorer fills the directory; its own owner and mode are ours
                    metadata.apply(os.fsencode(target), node)
        if result.errors:
            path, why = result.errors[0]
            raise WriterError(
                f"writer {label}: {len(result.errors)} file(s) not restored, first {path}: {why}"
            )
        try:
            writer.post_restore(ctx)
        except ShadowvaultError as err:
            raise WriterError(f"writer {label} failed at post_restore: {err}") from err
        log.info("restored %s: %s", label, ", ".join(result.components))
        done.append(result)
    return done


def _target(target_root: str, path: str, *, is_dir: bool) -> str:
    """The directory the Restorer fills for `path`: the path itself for a directory, its parent for a file."""
    below = os.path.join(target_root, path.lstrip("/")) if target_root not in ("", "/") else path
    return below if is_dir else os.path.dirname(below)
