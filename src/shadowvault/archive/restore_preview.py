"""`restore --dry-run`: what a files restore would create, replace and keep, without writing anything.

The same walk a restore makes (the same include and exclude rules, unsafe names refused), judged
against the target as it is now by `lstat` alone: nothing in the target is opened or followed, so a
symlink planted there is judged as the entry it is, as the restore itself treats it. What the
restore does with an entry that is already there follows `--overwrite`: `never` keeps it, `always`
replaces it, `if-newer` replaces it when the snapshot's copy is newer. A directory that is already
there is walked into (its entries are judged one by one) unless something else stands in its place.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from shadowvault.archive.patterns import PathFilter
from shadowvault.archive.restore_entries import Overwrite
from shadowvault.archive.tree_paths import TreeReader, find_node, join
from shadowvault.errors import NotFoundError, RepositoryError
from shadowvault.repo.tree import Node, duplicate_names, entry_error, invalid_name

CREATE, REPLACE, KEEP, SKIP = "create", "replace", "keep", "skip"


@dataclass(frozen=True)
class PreviewEntry:
    """One entry of the snapshot and what the restore would do with it."""

    action: str  # create | replace | keep | skip
    path: bytes  # in the snapshot
    place: bytes  # in the target: where the restore writes it (what a user checks)
    type: str
    size: int
    reason: str = ""
    failure: bool = False  # a skip the restore reports as an error (exit code 3), not a warning


def _failure(spath: bytes, place: bytes, type_: str, reason: str) -> PreviewEntry:
    """An entry the restore would fail on: skipped, and an error of its result."""
    return PreviewEntry(SKIP, spath, place, type_, 0, reason, failure=True)


@dataclass
class PreviewCounts:
    """The preview's totals, per action."""

    entries: dict[str, int] = field(default_factory=lambda: {CREATE: 0, REPLACE: 0, KEEP: 0, SKIP: 0})
    bytes_written: int = 0  # what the entries created or replaced would write
    failures: int = 0  # entries the restore would fail on: it would exit as a partial failure

    def add(self, entry: PreviewEntry) -> None:
        self.entries[entry.action] += 1
        self.failures += entry.failure
        if entry.action in (CREATE, REPLACE) and entry.type == "file":
            self.bytes_written += entry.size


def preview_restore(
    store: TreeReader,
    root_tree: bytes,
    subpath: str,
    target: str,
    *,
    path_filter: PathFilter | None = None,
    overwrite: str = Overwrite.NEVER.value,
) -> Iterator[PreviewEntry]:
    """Every entry a restore of `subpath` into `target` would lay down, keep or skip, depth first."""
    path_filter = path_filter or PathFilter()
    mode = Overwrite(overwrite)
    node = find_node(store, root_tree, subpath)
    spath = b"/" + b"/".join(p for p in os.fsencode(subpath).split(b"/") if p)
    there = os.path.isdir(target)
    if node is not None and node.type != "dir":
        yield _judge(node, spath, os.path.join(os.fsencode(target), node.name), mode, there)
        return
    tree_id = root_tree if node is None else node.subtree
    yield from _walk(store, tree_id, spath, os.fsencode(target), path_filter, mode, there)


def _walk(
    store: TreeReader,
    tree_id: bytes | None,
    spath: bytes,
    target: bytes,
    path_filter: PathFilter,
    mode: Overwrite,
    target_exists: bool,
) -> Iterator[PreviewEntry]:
    """The entries of one directory; `target_exists`: its place in the target is a directory now
    (else everything below it is new)."""
    if not tree_id:
        return
    try:
        nodes = store.load_tree(tree_id).nodes
    except (RepositoryError, NotFoundError) as err:
        yield _failure(spath, target, "dir", f"directory listing unreadable: {err}")
        return
    twice = duplicate_names(nodes)
    for node in nodes:
        child = join(spath, node.name)
        place = os.path.join(target, node.name)
        why = invalid_name(node.name) or ("a duplicate name" if node.name in twice else None)
        if why is not None:
            if path_filter.included(child) or path_filter.may_contain(child):
                yield _failure(child, place, node.type, f"unsafe name ({why})")
            continue
        if node.type != "dir":
            if path_filter.included(child):
                yield _judge(node, child, place, mode, target_exists)
            continue
        selected = path_filter.included(child)
        if not selected and not path_filter.may_contain(child):
            continue
        entry = _judge(node, child, place, mode, target_exists)
        if selected:
            yield entry
        if entry.action == KEEP and entry.reason != ALREADY_A_DIR:
            continue  # something else stays in its place: nothing below it can be restored
        if entry.action != SKIP:
            below_exists = entry.action == KEEP  # a directory already; created or replaced: new
            yield from _walk(store, node.subtree, child, place, path_filter, mode, below_exists)


ALREADY_A_DIR = "a directory already (its entries are judged one by one)"


def _judge(node: Node, spath: bytes, place: bytes, mode: Overwrite, parent_exists: bool) -> PreviewEntry:
    """What the restore would do with one entry, given what is at its place in the target now."""
    size = node.size if node.type == "file" else 0
    if node.error is not None and node.type == "file":
        return PreviewEntry(SKIP, spath, place, node.type, 0, entry_error(node.error))
    try:
        st = os.lstat(place) if parent_exists else None
    except FileNotFoundError:
        st = None
    except OSError as err:
        return _failure(spath, place, node.type, f"cannot look at its place in the target: {err.strerror}")
    if st is None:
        return PreviewEntry(CREATE, spath, place, node.type, size)
    if node.type == "dir" and stat.S_ISDIR(st.st_mode):
        return PreviewEntry(KEEP, spath, place, node.type, 0, ALREADY_A_DIR)
    if node.type == "dir" and mode is Overwrite.NEVER:
        return _failure(spath, place, node.type, "something that is not a directory is in its place")
    if node.type != "dir" and stat.S_ISDIR(st.st_mode) and mode is not Overwrite.NEVER:
        return _failure(spath, place, node.type, "a directory is in its place: a restore removes none")
    if mode is Overwrite.ALWAYS:
        return PreviewEntry(
            REPLACE, spath, place, node.type, size, "in the target already, --overwrite always"
        )
    if mode is Overwrite.IF_NEWER and node.mtime_ns > st.st_mtime_ns:
        return PreviewEntry(
            REPLACE, spath, place, node.type, size, "the snapshot's copy is newer, --overwrite if-newer"
        )
    if mode is Overwrite.IF_NEWER:
        return PreviewEntry(
            KEEP, spath, place, node.type, 0, "the target's copy is as new, --overwrite if-newer"
        )
    return PreviewEntry(KEEP, spath, place, node.type, 0, "in the target already, --overwrite never")
