"""`find --blob/--tree/--pack`: the entries of snapshots that reference given blobs, restic's way of
tracing a damaged or missing blob (or a whole pack) back to the files and directories that hold it.

A file matches a DATA blob id in its content (once per id, however often the file repeats it); a
directory matches its TREE blob id, the snapshot's root directory (`/`) included. Ids reach this
module as full ids (repo/object_refs.py checks what the user typed); the walk is listing.py's, with
the id of the tree that lists each entry (restic's `parent_tree`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

from shadowvault.archive.listing import walk_tree_listings
from shadowvault.archive.tree_paths import TreeReader
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Node


@dataclass(frozen=True)
class IdMatch:
    snapshot_id: str
    snapshot: Snapshot
    path: bytes
    node: Node | None  # None: the snapshot's root directory, which has no node of its own
    object_type: str  # "blob" (a file's content) or "tree" (a directory)
    object_id: bytes
    parent_tree: bytes | None  # the tree that lists the entry (None for the root)


def find_ids(
    store: TreeReader,
    snapshots: Iterable[tuple[str, Snapshot]],
    blobs: Collection[bytes],
    trees: Collection[bytes],
) -> Iterator[IdMatch]:
    """Every file whose content holds one of `blobs` and every directory whose tree is one of
    `trees`, snapshot by snapshot, depth first."""
    blob_set, tree_set = frozenset(blobs), frozenset(trees)
    for snapshot_id, snapshot in snapshots:
        if snapshot.tree in tree_set:
            yield IdMatch(snapshot_id, snapshot, b"/", None, "tree", snapshot.tree, None)
        for parent, path, node in walk_tree_listings(store, snapshot.tree or None, b"/"):
            if node.type == "file" and blob_set:
                for blob_id in dict.fromkeys(b for b in node.content if b in blob_set):
                    yield IdMatch(snapshot_id, snapshot, path, node, "blob", blob_id, parent)
            elif node.type == "dir" and node.subtree in tree_set and node.subtree is not None:
                yield IdMatch(snapshot_id, snapshot, path, node, "tree", node.subtree, parent)
