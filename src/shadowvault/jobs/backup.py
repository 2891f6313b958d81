"""The backup job: a shadow set over the volumes that hold the paths, the shadows archived, a snapshot saved.

The sequence of one backup, as the requester runs it: resolve and record the paths, find the parent
snapshot, split the paths into live and shadowed (jobs/shadowing.py), take the shadow set, let the
archiver read the shadows (and the live paths), release the set, then store the backup manifest and
save the snapshot. File errors do not stop it: they are in the result and the snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shadowvault import __version__
from shadowvault.archive.backup import (
    FILES_COMPONENT,
    below,
    drop_nested,
    find_parent,
    normalize_path,
    recorded_below,
    skipped_summary,
    snapshot_summary,
    username,
)
from shadowvault.archive.diff import Difference, diff_trees, directories_above
from shadowvault.archive.exclude_rules import ExcludeRules, tag_rules
from shadowvault.archive.item_report import ItemReport
from shadowvault.archive.parent_reuse import ChangeRules
from shadowvault.archive.patterns import PathFilter
from shadowvault.archive.scan import Scanner
from shadowvault.archive.tree_paths import text
from shadowvault.archive.walk_stats import Source, WalkStats
from shadowvault.archive.walker import Archiver
from shadowvault.errors import UsageError
from shadowvault.jobs.shadowing import (
    grade,
    mount_grafts,
    plan,
    shadow_sources,
    taken_shadow_set,
)
from shadowvault.paths_within import is_within
from shadowvault.repo.dry_run_store import DryRunStore
from shadowvault.repo.format import BlobType
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.snapshot_text import require_text
from shadowvault.shadow import manifest as manifest_doc
from shadowvault.shadow import validity
from shadowvault.shadow.providers.names import NO_PROVIDER
from shadowvault.shadow.requesting import IN_PROCESS, ShadowSets

log = logging.getLogger(__name__)


@dataclass
class BackupRequest:
    """What to back up and how; plain values, as the CLI, the daemon or a test gives them."""

    paths: list[str]
    excludes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    provider: str = "auto"
    writers: list[str] = field(default_factory=list)
    host: str | None = None
    parent: str | None = None  # a snapshot ref; None = the newest snapshot of the same paths and host
    full: bool = False  # read every file, ignoring the parent
    # components (see jobs/backup_components.py): `paths` are read below `source_root` and recorded
    # as given; `extra_sources` are (recorded path, read path) pairs (generated documents);
    # `components` is what Snapshot.components records (default: files)
    source_root: str = "/"
    extra_sources: list[tuple[str, str]] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    one_file_system: bool = False  # mounts below the paths are not read (said, and noted in the manifest)
    include_snapshots: bool = False  # read other tools' btrfs snapshots below the paths (snapshot_copies.py)
    exclude_larger_than: int | None = None  # files above this size are left out (counted as skipped)
    exclude_caches: bool = False  # directories with a valid CACHEDIR.TAG keep only the tag
    exclude_if_present: list[str] = field(
        default_factory=list
    )  # NAME[:HEADER]: such directories keep the tag
    iexcludes: list[str] = field(default_factory=list)  # globs matched ignoring case
    time: float | None = None  # the snapshot's time (restic's --time, importing old data); None: now
    ignore_inode: bool = False  # the incremental test leaves the inode number out (archive/parent_reuse.py)
    ignore_ctime: bool = False  # ... and the ctime
    with_atime: bool = False  # record atimes (by default the mtime, as restic: archive/metadata.py)
    dry_run: bool = False  # read and chunk everything, count what would be added, write nothing
    # count the files and bytes ahead of the walk (archive/scan.py), for a progress percentage: a
    # second lstat of every entry, so only when someone watches the progress
    count_totals: bool = True


@dataclass
class BackupResult:
    """The saved snapshot and what reading the files found."""

    snapshot_id: str
    snapshot: Snapshot
    stats: WalkStats
    duration: float
    freeze_window: float | None
    added_bytes: int
    warnings: list[str]
    dry_run: bool = False  # nothing was saved: `snapshot_id` is empty, `snapshot` was never stored
    changes: list[Difference] = field(default_factory=list)  # a dry run: what the snapshot would change

    @property
    def errors(self) -> list[tuple[str, str]]:
        """(path, reason) of what could not be read: in the snapshot as error entries."""
        return self.stats.errors

    @property
    def file_warnings(self) -> list[tuple[str, str]]:
        """(path, reason) of what was stored but changed while read, or vanished before it was read."""
        return self.stats.warnings

    def summary(self) -> dict[str, Any]:
        """The final summary a user or a script reads."""
        return {
            "snapshot_id": self.snapshot_id or None,
            "dry_run": self.dry_run,
            **self.stats.as_dict(),
            "warnings": len(self.stats.warnings) + len(self.warnings),  # files', then the set's
            **skipped_summary(self.stats),
            "added_bytes": self.added_bytes,
            "duration": round(self.duration, 3),
            "freeze_window": self.freeze_window,
            "consistency": dict(self.snapshot.consistency),
            "parent": self.snapshot.parent,
        }


def would_change(
    store: Repository | DryRunStore, parent: tuple[str, Snapshot] | None, root: bytes, paths: list[str]
) -> list[Difference]:
    """What a dry run's snapshot (its tree `root`) changes against its parent; the directories above
    the backed-up paths are only recorded, not backed up, so they are not listed."""
    above = directories_above(paths)
    old = parent[1].tree if parent else None
    return [c for c in diff_trees(store, old, root, above=above) if c.path not in above]


def drop_excluded(paths: list[bytes], path_filter: PathFilter) -> tuple[list[bytes], list[str]]:
    """The paths given that no exclude pattern matches, and a warning for each one that one does.

    Such a path is left out, as restic 0.14 leaves it out (silently) and as the same path found below
    a directory given would be: it was stored as an empty directory (a file: whole), which restored
    as if its contents had been lost. Left out with every path: UsageError, nothing to back up.
    """
    kept = [p for p in paths if not path_filter.excluded(p)]
    if not kept:
        raise UsageError(
            f"an exclude pattern matches every path given ({text(paths[0])}"
            f"{', ...' if len(paths) > 1 else ''}): nothing to back up"
        )
    warnings = [
        f"{text(p)}: given to back up, but an exclude pattern matches it: left out of the snapshot"
        for p in paths
        if p not in kept
    ]
    return kept, warnings


def run_backup(
    repo: Repository,
    request: BackupRequest,
    *,
    stats: WalkStats | None = None,
    on_warning: Callable[[str], None] | None = None,
    sets: ShadowSets = IN_PROCESS,
    on_item: ItemReport | None = None,
) -> BackupResult:
    """Back up `request.paths` into `repo` and save the snapshot; file errors are in the result.

    `sets` makes the shadow set: this process's coordinator, or the daemon's. `on_item` is told of
    each file and directory as it is settled (`backup -vv`: archive/item_report.py).
    """
    started = time.monotonic()
    started_wall = time.time()
    warn = on_warning or log.warning
    if not request.paths:
        raise UsageError("no paths to back up")
    source_root = os.fsencode(os.path.abspath(request.source_root))
    foreign_root = source_root != b"/"  # another machine's tree: read live, below that root
    if foreign_root:
        originals = drop_nested([recorded_below(p, source_root) for p in request.paths])
    else:
        originals = drop_nested([normalize_path(p) for p in request.paths])
    path_filter = PathFilter(excludes=request.excludes, iexcludes=request.iexcludes)
    originals, excluded = drop_excluded(originals, path_filter)
    recorded = [os.fsdecode(p) for p in originals]
    host = request.host or socket.gethostname()
    require_text("path", recorded)  # before any work: the snapshot could not be saved
    require_text("host", [host])
    require_text("tag", request.tags)
    repo_path = os.path.realpath(repo.path)
    rules = ExcludeRules(
        request.exclude_larger_than, tag_rules(request.exclude_caches, request.exclude_if_present)
    )
    snapshot_time = started_wall if request.time is None else request.time
    planned = plan(
        originals,
        NO_PROVIDER if foreign_root else request.provider,
        one_file_system=request.one_file_system,
        left_out=lambda mount: path_filter.excluded(mount) or is_within(mount, repo_path),
        nested=not foreign_root,  # another machine's tree: its mounts are not this machine's
        snapshot_copies_read=request.include_snapshots,
    )
    warnings = [*excluded, *planned.warnings]
    for message in warnings:
        warn(message)

    parent: tuple[str, Snapshot] | None = None
    if request.parent:
        parent = repo.find_snapshot(request.parent, paths=recorded, host=host)  # "latest": of these paths
    elif not request.full:
        parent = find_parent(repo.list_snapshots(), recorded, host, before=request.time)

    skip = planned.skip_paths() | {os.fsencode(repo_path)}
    stats = stats or WalkStats()
    store = DryRunStore(repo) if request.dry_run else repo
    added_before = store.stats.stored_bytes_added

    stats.shadowing = True
    with taken_shadow_set(
        sets, planned.set_volumes(), request.writers, request.provider, planned.read_scope()
    ) as manifest:
        stats.shadowing, stats.walk_started = False, time.monotonic()  # the rate counts from here
        sources = [Source(p, below(source_root, p)) for p in planned.live]
        extra = [Source(os.fsencode(orig), os.fsencode(read)) for orig, read in request.extra_sources]
        sources += extra
        if manifest is not None:
            sources += shadow_sources(manifest, planned)
        grafts = mount_grafts(manifest, planned)
        if any(not s.orig_path.strip(b"/") for s in sources):  # `/` covers the other sources: the
            grafts.update({s.orig_path: s for s in extra})  # generated documents are grafted into it
        archiver = Archiver(
            store,
            path_filter=path_filter,
            skip_paths=skip,
            grafts=grafts,
            not_descended={os.fsencode(m) for m in planned.nested_skipped},
            stats=stats,
            copy_started=manifest.created if manifest is not None else None,
            virtual_root=source_root,
            rules=rules,
            change_rules=ChangeRules(request.ignore_inode, request.ignore_ctime),
            with_atime=request.with_atime,
            report=on_item,
        )
        left_out = {os.fsencode(m) for m in planned.nested_skipped} | skip
        scanner = Scanner(
            sources,
            stats,
            skipped=lambda p: p in left_out or path_filter.excluded(p),
            grafts=grafts,
            rules=rules,
        )
        with scanner if request.count_totals else contextlib.nullcontext():
            root = archiver.archive(sources, parent[1].tree if parent else None)
        with stats.lock:  # the walk is done: its counts are the totals, whatever the scan reached
            stats.scan_files, stats.scan_bytes, stats.scan_finished = stats.files, stats.bytes_total, True
        if manifest is not None:
            validity.ensure_valid(manifest)  # an overflowed LVM snapshot read "fine" from cache

    manifest_blob = None
    components = list(request.components) or [FILES_COMPONENT]
    freeze_window = None
    if manifest is not None:
        for note in manifest.notes:
            warnings.append(note)
            warn(note)
        manifest.notes = [*manifest.notes, *planned.mount_notes]  # the mounts not read (warned above)
        manifest_blob = store.save_blob(BlobType.DATA, manifest_doc.encode(manifest))
        components += [c.name for c in manifest.components()]
        freeze_window = manifest.freeze_window
    duration = time.monotonic() - started
    added_bytes = store.stats.stored_bytes_added - added_before
    snapshot = Snapshot(
        time=snapshot_time,
        host=host,
        username=username(),
        paths=recorded,
        tags=list(request.tags),
        tree=root,
        parent=parent[0] if parent else None,
        manifest=manifest_blob,
        components=components,
        consistency=grade(manifest, planned, request.components),
        excludes=list(request.excludes),
        summary=snapshot_summary(
            stats, added_bytes=added_bytes, duration=duration, freeze_window=freeze_window
        ),
        program_version=__version__,
    )
    if request.dry_run:  # nothing saved: what the snapshot would change, against its parent
        changes = would_change(store, parent, root, recorded)
        return BackupResult(
            "", snapshot, stats, duration, freeze_window, added_bytes, warnings, True, changes
        )
    repo.flush()
    snapshot_id = repo.save_snapshot(snapshot)
    return BackupResult(
        snapshot_id=snapshot_id,
        snapshot=snapshot,
        stats=stats,
        duration=time.monotonic() - started,
        freeze_window=freeze_window,
        added_bytes=added_bytes,
        warnings=warnings,
    )
