"""Which blobs a snapshot references: its trees (recursively), their content, and its manifest."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Protocol

from shadowvault.errors import RepositoryError, ShadowvaultError
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Tree


class BlobSet(Protocol):
    """What mark_used fills: a set of blob ids, or check's one bit per indexed blob."""

    def __contains__(self, blob_id: object, /) -> bool: ...

    def add(self, blob_id: bytes, /) -> None: ...

    def update(self, blob_ids: Collection[bytes], /) -> None: ...


def mark_used(
    repo: Repository,
    snapshots: Iterable[tuple[str, Snapshot]],
    used: BlobSet,
    on_error: Callable[[str, bytes, ShadowvaultError], None] | None = None,
    on_tree: Callable[[bytes, Tree], None] | None = None,
) -> None:
    """Add every blob reachable from `snapshots` to `used` (trees already in `used` are not re-read).

    A tree that cannot be loaded calls `on_error(snapshot id, tree id, error)`, or raises
    RepositoryError when no handler is given (prune must never guess). `on_tree(tree id, tree)`
    sees every tree read, once its content was added to `used` in one `update` (check inspects
    names there, and sizes with the slots its set found for that content).
    """
    for snapshot_id, snap in snapshots:
        if snap.manifest:
            used.add(snap.manifest)
        if not snap.tree:
            continue
        stack = [snap.tree]
        while stack:
            tree_id = stack.pop()
            if tree_id in used:
                continue
            used.add(tree_id)
            try:
                tree = repo.load_tree(tree_id)
            except ShadowvaultError as err:
                if on_error is None:
                    raise RepositoryError(
                        f"snapshot {snapshot_id[:8]} references tree {tree_id.hex()[:16]} that cannot be"
                        f" read ({err}); run `shadowvault check`"
                    ) from err
                on_error(snapshot_id, tree_id, err)
                continue
            # the whole directory's content in one call: a call per file was over a quarter of a
            # check of a million files
            used.update([blob_id for node in tree.nodes for blob_id in node.content])
            if on_tree is not None:
                on_tree(tree_id, tree)
            stack.extend(
                node.subtree for node in tree.nodes if node.subtree is not None and node.subtree not in used
            )
