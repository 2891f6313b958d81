"""Check: does each file's recorded size equal the sum of its content blobs' sizes?

restic's "metadata size (N) and sum of blob sizes (M) do not match". A backup records the size it
stored, so a difference comes from a crafted or broken client: a restore writes what is stored (M
bytes, with a warning), `dump` refuses the file. The sizes come from the index (each blob's raw
length), read where check marks the blobs used: no blob is looked up twice, no tree read again
(only the paths of the files found are looked for afterwards, by a walk of the snapshots).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from shadowvault.display import display_name, one_component
from shadowvault.errors import ShadowvaultError
from shadowvault.repo.index import BlobIndex
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot, chronological
from shadowvault.repo.tree import Tree

Mismatch = tuple[bytes, int, int]  # entry name, recorded size, sum of its blobs' sizes


class SizeChecker:
    """Per tree (called once for each, with the slots check's used set found for its content, in
    order): the files whose size is not their blobs'. A blob the index does not hold is reported
    as missing elsewhere; its file's size is not judged."""

    def __init__(self, index: BlobIndex, blob_size: Callable[[bytes], int | None]) -> None:
        self._raw_lengths = index.bulk_raw_lengths()
        self._blob_size = blob_size  # for a blob not among the bulk entries (no slot)
        self.found: dict[bytes, list[Mismatch]] = {}  # tree id -> its files that do not match

    def check(self, tree_id: bytes, tree: Tree, slots: Sequence[int | None]) -> None:
        raw_lengths, blob_size, at = self._raw_lengths, self._blob_size, 0
        for node in tree.nodes:
            content = node.content
            if not content:  # a directory, a symlink, an empty file
                if node.size and node.type == "file" and node.error is None:
                    self.found.setdefault(tree_id, []).append((node.name, node.size, 0))
                continue
            count, start = len(content), at
            at += count
            if node.type != "file" or node.error is not None:
                continue
            if count == 1:  # most files: one blob, no slice
                slot = slots[start]
                stored = raw_lengths[slot] if slot is not None else blob_size(content[0])
            else:
                stored = self._sum(content, slots[start:at])
            if stored is not None and stored != node.size:
                self.found.setdefault(tree_id, []).append((node.name, node.size, stored))

    def _sum(self, content: list[bytes], slots: Sequence[int | None]) -> int | None:
        """The sum of the blobs' sizes; None when the index does not hold one of them."""
        stored = 0
        for blob_id, slot in zip(content, slots, strict=True):
            size = self._raw_lengths[slot] if slot is not None else self._blob_size(blob_id)
            if size is None:
                return None
            stored += size
        return stored


def size_problem(path: bytes, recorded: int, stored: int) -> str:
    """The error for one file, by its path in the snapshot."""
    return (
        f"{display_name(path)}: metadata size ({recorded}) and sum of blob sizes ({stored}) do not"
        f" match (a restore writes the {stored} bytes stored)"
    )


def tree_problem(tree_id: bytes, mismatches: list[Mismatch]) -> str:
    """What a tree holding such files is flagged with, for the snapshots it affects."""
    name, recorded, stored = mismatches[0]
    more = f" (and {len(mismatches) - 1} more files)" if len(mismatches) > 1 else ""
    return f"tree {tree_id.hex()[:16]}: {size_problem(one_component(name), recorded, stored)}{more}"


def where_found(
    repo: Repository, snapshots: list[tuple[str, Snapshot]], found: dict[bytes, list[Mismatch]]
) -> list[str]:
    """An error for each file of `found`, naming the oldest snapshot and path it is met at (a tree
    in several places or snapshots is named once; check names every snapshot affected). Trees are
    walked once each, and only until every tree of `found` is placed."""
    errors: list[str] = []
    left = set(found)
    walked: set[bytes] = set()
    for snapshot_id, snap in sorted(snapshots, key=chronological):  # the oldest first: always the same
        stack: list[tuple[bytes, bytes]] = [(snap.tree, b"")]
        while stack and left:
            tree_id, path = stack.pop()
            if tree_id in walked:
                continue
            walked.add(tree_id)
            if tree_id in left:
                left.discard(tree_id)
                errors += [
                    f"snapshot {snapshot_id[:8]}: {size_problem(_joined(path, name), recorded, stored)}"
                    for name, recorded, stored in found[tree_id]
                ]
            try:
                tree = repo.load_tree(tree_id)
            except ShadowvaultError:
                continue  # reported by check already
            stack += [(n.subtree, _joined(path, n.name)) for n in tree.nodes if n.subtree is not None]
    for tree_id in left:  # not met again (a snapshot forgotten meanwhile)
        errors += [
            f"tree {tree_id.hex()[:16]}: {size_problem(name, recorded, stored)}"
            for name, recorded, stored in found[tree_id]
        ]
    return errors


def _joined(path: bytes, name: bytes) -> bytes:
    return path + b"/" + one_component(name)
