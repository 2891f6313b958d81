"""`rewrite`: snapshots without what was backed up by mistake (a secret, a huge file), restic's rewrite.

For each snapshot whose tree holds an entry the exclude patterns match, a new snapshot is written
with the same time, host, paths and the rest, a tree without those entries (archive/rewrite_trees.py),
the tag `rewrite`, `original` = the snapshot it replaces (or that one's own `original`) and, in its
summary, a `rewritten` record (when, the patterns, what was removed). A snapshot with nothing to
remove is left as it is. The originals stay unless `forget`; prune then frees the data.

Write order (docs/repository.md, "Write order and crashes"): every new tree first, then one flush
(their packs, then their index), then the new snapshots, and only then are originals removed. A
crash leaves the originals, and perhaps some new snapshots beside them, never neither. The run
holds a session of kind `rewrite`, which never runs beside a prune or a repair (each refuses while
the other is live), as `repair snapshots` does: the new trees reference the originals' blobs, which
only a prune could take away meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from shadowvault.archive.patterns import PathFilter
from shadowvault.archive.rewrite_trees import Removal, SaveTree, TreeFilter
from shadowvault.errors import RepositoryError, ShadowvaultError, UsageError
from shadowvault.repo.session import list_sessions, refuse_concurrent_maintenance
from shadowvault.repo.snapshot import Snapshot, summary_bytes
from shadowvault.repo.tree import Tree, encode_tree

if TYPE_CHECKING:
    from shadowvault.repo.repository import Repository

REWRITE_TAG = "rewrite"  # restic's tag for a rewritten snapshot
SESSION_KIND = "rewrite"


@dataclass(frozen=True)
class RewriteRules:
    """What to remove: exclude globs, and globs matched without regard to case (restic's --iexclude)."""

    excludes: tuple[str, ...] = ()
    iexcludes: tuple[str, ...] = ()

    def path_filter(self) -> PathFilter:
        """The compiled patterns (UsageError for none, or for one that is not a glob)."""
        if not self.excludes and not self.iexcludes:
            raise UsageError(
                "nothing to remove: give --exclude, --exclude-file, --iexclude or --iexclude-file"
            )
        return PathFilter(excludes=self.excludes, iexcludes=self.iexcludes)


@dataclass
class RewrittenSnapshot:
    original: str  # the snapshot rewritten
    new_id: str | None  # None in a dry run (unless `existing`)
    removal: Removal
    existing: bool = False  # an earlier run wrote this copy already (new_id)
    forgotten: bool = False


@dataclass
class RewriteResult:
    dry_run: bool
    checked: int = 0
    rewritten: list[RewrittenSnapshot] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (snapshot id, why): not rewritten
    emptied: list[str] = field(default_factory=list)  # nothing would be left: not rewritten, kept


def _start(repo: Repository) -> None:
    session = repo.session
    if session is None or session.doc.kind != SESSION_KIND:
        raise RepositoryError("rewrite needs the repository opened for writing (kind 'rewrite')")
    others = [s for s in list_sessions(repo.backend, repo.sealer) if s.name != session.name]
    refuse_concurrent_maintenance(others, "rewrite")


def rewrite_snapshots(
    repo: Repository,
    snapshots: Iterable[tuple[str, Snapshot]],
    rules: RewriteRules,
    *,
    forget: bool = False,
    dry_run: bool = False,
    report: Callable[[RewrittenSnapshot], None] | None = None,
) -> RewriteResult:
    """Rewrite `snapshots` without what `rules` match; `report` hears of each snapshot rewritten (in a
    dry run: that would be) once it is saved, or its original removed with `forget`.

    A snapshot already rewritten the same way (a snapshot with its time, host, paths, tags, the same
    `original` and the very tree this run makes: an earlier run without `forget`, or one that
    crashed before removing the originals) is not written again; `forget` still removes it."""
    path_filter = rules.path_filter()
    if not dry_run:
        _start(repo)
    trees = TreeFilter(repo, path_filter, _tree_id(repo) if dry_run else repo.save_tree)
    result = RewriteResult(dry_run=dry_run)
    empty_tree = repo.blob_id(encode_tree(Tree()))
    planned: list[tuple[Snapshot, RewrittenSnapshot]] = []
    for snapshot_id, snapshot in snapshots:
        result.checked += 1
        if not snapshot.tree:
            continue
        try:
            removal = trees.rewrite(snapshot.tree)
        except ShadowvaultError as err:
            result.unreadable.append((snapshot_id, str(err)))
            continue
        if removal.matched and removal.tree_id == empty_tree:  # backup refuses an empty snapshot too
            result.emptied.append(snapshot_id)
        elif removal.matched:
            planned.append((snapshot, RewrittenSnapshot(snapshot_id, None, removal)))
    copies = _earlier_copies(repo) if planned else {}
    now = time.time()
    for snapshot, item in planned:  # the first save_snapshot flushes every new tree first
        item.new_id = copies.get(_copy_key(item.original, snapshot, item.removal.tree_id))
        item.existing = item.new_id is not None
        if not dry_run and item.new_id is None:
            copy = rewritten_copy(item.original, snapshot, item.removal, rules, now)
            item.new_id = repo.save_snapshot(copy)
        if dry_run or not forget:
            _done(result, item, report)
    if forget and not dry_run:
        for _snapshot, item in planned:  # every new snapshot is saved: remove the originals
            if item.new_id != item.original:
                repo.remove_snapshot(item.original)
            item.forgotten = True
            _done(result, item, report)
    return result


CopyKey = tuple[str, bytes, float, str, tuple[str, ...], frozenset[str]]


def _copy_key(snapshot_id: str, snapshot: Snapshot, tree: bytes) -> CopyKey:
    """What a rewritten copy of `snapshot` with `tree` shares with it (its tags but `rewrite`)."""
    return (
        snapshot.original or snapshot_id,
        tree,
        snapshot.time,
        snapshot.host,
        tuple(sorted(snapshot.paths)),
        frozenset(snapshot.tags) - {REWRITE_TAG},
    )


def _earlier_copies(repo: Repository) -> dict[CopyKey, str]:
    """The rewritten copies in the repository, by what they share with their originals."""
    return {
        _copy_key(snapshot.original, snapshot, snapshot.tree): snapshot_id
        for snapshot_id, snapshot in repo.list_snapshots()
        if snapshot.original and REWRITE_TAG in snapshot.tags
    }


def _tree_id(repo: Repository) -> SaveTree:
    """A dry run's `save`: the id a tree would have, nothing stored."""
    return lambda tree: repo.blob_id(encode_tree(tree))


def _done(
    result: RewriteResult, item: RewrittenSnapshot, report: Callable[[RewrittenSnapshot], None] | None
) -> None:
    result.rewritten.append(item)
    if report is not None:
        report(item)


def rewritten_copy(
    snapshot_id: str, snapshot: Snapshot, removal: Removal, rules: RewriteRules, now: float
) -> Snapshot:
    """The snapshot with the rewritten tree, its tag, `original` and a `rewritten` record; its size
    (summary `bytes`) without what was removed, and the removed paths gone from its summary's lists."""
    path_filter = rules.path_filter()
    summary = dict(snapshot.summary)
    history = summary.get("rewritten")
    record: dict[str, Any] = {
        "time": now,
        "from": snapshot_id,
        "excludes": list(rules.excludes),
        "iexcludes": list(rules.iexcludes),
        "removed_entries": removal.entries,
        "removed_bytes": removal.bytes,
    }
    summary["rewritten"] = [*(history if isinstance(history, list) else []), record]
    size = summary_bytes(snapshot)
    if size is not None:
        summary["bytes"] = max(0, size - removal.bytes)
    for key in ("error_paths", "warning_paths", "skipped_paths"):
        if isinstance(summary.get(key), list):
            summary[key] = [item for item in summary[key] if not _names_removed(item, path_filter)]
    tags = snapshot.tags if REWRITE_TAG in snapshot.tags else [*snapshot.tags, REWRITE_TAG]
    return msgspec.structs.replace(
        snapshot,
        tree=removal.tree_id,
        tags=tags,
        summary=summary,
        original=snapshot.original or snapshot_id,
    )


def _names_removed(item: object, path_filter: PathFilter) -> bool:
    """Whether a summary's path (a string, or a `{"path": ...}` entry) names something removed."""
    path = item.get("path") if isinstance(item, dict) else item
    return isinstance(path, str) and path_filter.excluded(path)
