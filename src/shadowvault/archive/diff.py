"""Compare two snapshots: what was added, removed, modified (content or type), or only changed metadata.

Subtrees with the same TREE blob id are identical and are not descended into, so a diff of two
snapshots that share most of their data reads only the directories that changed.

An entry the second backup could not read is `unreadable` (with its error), and a directory it could
not list is not descended into: what was in it is unknown, not removed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from shadowvault.archive.listing import entry_path, walk_tree
from shadowvault.archive.tree_paths import TreeReader
from shadowvault.repo.tree import Node, invalid_name


class Change(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    MODIFIED = "modified"
    METADATA = "metadata"
    UNREADABLE = "unreadable"  # could not be read by the second backup


SYMBOLS = {
    Change.ADDED: "+",
    Change.REMOVED: "-",
    Change.MODIFIED: "M",
    Change.METADATA: "U",
    Change.UNREADABLE: "!",
}


@dataclass(frozen=True)
class Difference:
    path: bytes
    change: Change
    type: str
    error: str | None = None  # why the entry could not be read at backup
    before: Sequence[bytes] = ()  # the data blobs of the first snapshot's entry (removed, modified)
    after: Sequence[bytes] = ()  # the data blobs of the second snapshot's entry (added, modified)


def _children(store: TreeReader, tree_id: bytes | None) -> dict[bytes, Node]:
    if not tree_id:
        return {}
    return {node.name: node for node in store.load_tree(tree_id).nodes}


def _below(store: TreeReader, name: bytes, node: Node, path: bytes) -> Iterator[tuple[bytes, Node]]:
    """What a directory holds; nothing for a crafted name (listed, never walked: listing.py)."""
    if invalid_name(name) is not None:
        return iter(())
    return walk_tree(store, node.subtree, path)


def _content_differs(a: Node, b: Node) -> bool:
    if a.type != b.type:
        return True
    if a.type == "file":
        return a.content != b.content or a.size != b.size
    if a.type == "symlink":
        return a.link_target != b.link_target
    if a.type in ("chardev", "blockdev"):
        return a.rdev != b.rdev
    return False


def _metadata_differs(a: Node, b: Node) -> bool:
    return _metadata(a) != _metadata(b)


def _metadata(n: Node) -> tuple[object, ...]:
    """What `U` compares: owner, mode, mtime, xattrs, device number, symlink target."""
    return (n.mode, n.uid, n.gid, n.user, n.group, n.mtime_ns, n.xattrs, n.rdev, n.link_target)


def directories_above(paths: Iterable[str]) -> frozenset[bytes]:
    """The directories above backed-up paths (/, /srv for /srv/www): a backup records their metadata
    as it finds it, but what changes in them (another program's file in /tmp) was never backed up."""
    above = set()
    for path in paths:
        parts = [p for p in os.fsencode(path).split(b"/") if p]
        for depth in range(len(parts)):
            above.add(b"/" + b"/".join(parts[:depth]))
    return frozenset(above)


def diff_trees(
    store: TreeReader,
    old: bytes | None,
    new: bytes | None,
    prefix: bytes = b"/",
    above: frozenset[bytes] = frozenset(),
) -> Iterator[Difference]:
    """Every difference between two trees, sorted by path; the metadata of the directories `above`
    the backed-up paths is not compared. One iterator per pair of directories compared on a list,
    not one generator inside another: two crafted trees thousands of directories deep ended `diff`
    in a RecursionError."""
    levels = [_level(store, old, new, prefix, above)]
    while levels:
        for item in levels[-1]:
            if isinstance(item, Difference):
                yield item
            else:
                levels.append(_level(store, *item, above))
                break
        else:
            levels.pop()


_Descent = tuple[bytes | None, bytes | None, bytes]  # two directories' trees to compare, and their path


def _level(
    store: TreeReader, old: bytes | None, new: bytes | None, prefix: bytes, above: frozenset[bytes]
) -> Iterator[Difference | _Descent]:
    """The differences of one pair of directories, and where to descend next (in path order)."""
    if old == new:
        return
    before, after = _children(store, old), _children(store, new)
    for name in sorted(before.keys() | after.keys()):
        path = entry_path(prefix, name)
        a, b = before.get(name), after.get(name)
        if a is None:
            assert b is not None
            yield from _all_added(store, name, b, path)
            continue
        if b is None:
            yield from _all_removed(store, name, a, path)
            continue
        if b.error is not None and b.error != a.error:
            yield Difference(path, Change.UNREADABLE, b.type, b.error)
            continue
        if a.type == "dir" and b.type == "dir":
            if path not in above and _metadata_differs(a, b):
                yield Difference(path, Change.METADATA, "dir")
            if invalid_name(name) is None:  # a crafted entry is listed, never walked (as walk_tree)
                yield a.subtree, b.subtree, path
            continue
        if _content_differs(a, b):
            if a.type != b.type:
                yield from _all_removed(store, name, a, path)
                yield from _all_added(store, name, b, path)
            else:
                yield Difference(path, Change.MODIFIED, b.type, before=a.content, after=b.content)
        elif _metadata_differs(a, b):
            yield Difference(path, Change.METADATA, b.type)


def _all_added(store: TreeReader, name: bytes, node: Node, path: bytes) -> Iterator[Difference]:
    """An entry only the second snapshot holds, and everything below it."""
    yield Difference(path, Change.ADDED, node.type, node.error, after=node.content)
    if node.type == "dir":
        for sub_path, sub in _below(store, name, node, path):
            yield Difference(sub_path, Change.ADDED, sub.type, sub.error, after=sub.content)


def _all_removed(store: TreeReader, name: bytes, node: Node, path: bytes) -> Iterator[Difference]:
    """An entry only the first snapshot holds, and everything below it."""
    yield Difference(path, Change.REMOVED, node.type, before=node.content)
    if node.type == "dir":
        for sub_path, sub in _below(store, name, node, path):
            yield Difference(sub_path, Change.REMOVED, sub.type, before=sub.content)
