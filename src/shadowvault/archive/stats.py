"""`stats`: how big snapshots are, restored and stored (restic's four modes).

- restore-size: what a restore of each snapshot writes: the files' sizes (a hard-linked file once per
  snapshot), and the count of every entry but directories, every path counted but each tree read
  once (tree_totals.py: a tree reached by 2^40 paths is summed, not walked).
- files-by-contents: files with the same content counted once across the snapshots (each tree read
  once).
- blobs-per-file: the distinct data blobs the files use, counted once (their plaintext size).
- raw-data: the distinct blobs (data and trees) the snapshots reference, as stored in the packs
  (after compression and encryption) and uncompressed, with the restore size beside them; the dedup
  ratio is the restore size over the uncompressed size of the file data stored (trees and manifests
  are not file data).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from shadowvault.archive.tree_paths import TreeReader
from shadowvault.archive.tree_totals import RestoreSizes, distinct_trees_nodes
from shadowvault.repo.index import BlobLocation
from shadowvault.repo.snapshot import Snapshot

MODES = ("restore-size", "files-by-contents", "blobs-per-file", "raw-data")


class IndexedTrees(TreeReader, Protocol):
    def lookup(self, blob_id: bytes) -> BlobLocation | None: ...


@dataclass
class Stats:
    mode: str
    snapshots_count: int = 0
    total_size: int = 0
    total_file_count: int = 0
    total_blob_count: int = 0
    restore_size: int = 0
    total_uncompressed_size: int = 0
    data_uncompressed_size: int = 0  # of the DATA blobs files use: what the dedup ratio compares against
    missing_blobs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "mode": self.mode,
            "snapshots_count": self.snapshots_count,
            "total_size": self.total_size,
            "total_file_count": self.total_file_count,
        }
        if self.mode in ("blobs-per-file", "raw-data"):
            doc["total_blob_count"] = self.total_blob_count
        if self.mode == "raw-data":
            doc["total_uncompressed_size"] = self.total_uncompressed_size
            doc["restore_size"] = self.restore_size
            doc["dedup_ratio"] = self.dedup_ratio
            doc["compression_ratio"] = (
                round(self.total_uncompressed_size / self.total_size, 3) if self.total_size else None
            )
        if self.missing_blobs:
            doc["missing_blobs"] = len(self.missing_blobs)
        return doc

    @property
    def dedup_ratio(self) -> float | None:
        if not self.data_uncompressed_size:
            return None
        return round(self.restore_size / self.data_uncompressed_size, 3)


def _referenced_blobs(store: TreeReader, snapshots: Iterable[Snapshot]) -> tuple[set[bytes], set[bytes]]:
    """(file data blobs, trees and manifests) the snapshots reference (each tree walked once)."""
    data: set[bytes] = set()
    others: set[bytes] = {s.manifest for s in snapshots if s.manifest}
    pending = [s.tree for s in snapshots if s.tree]
    while pending:
        tree_id = pending.pop()
        if tree_id in others:
            continue
        others.add(tree_id)
        for node in store.load_tree(tree_id).nodes:
            data.update(node.content)
            if node.subtree:
                pending.append(node.subtree)
    return data, others


def snapshot_stats(store: IndexedTrees, snapshots: list[tuple[str, Snapshot]], mode: str) -> Stats:
    """The figures of `mode` for these snapshots together."""
    stats = Stats(mode, snapshots_count=len(snapshots))
    if mode in ("restore-size", "raw-data"):
        sizes = RestoreSizes(store)  # each tree read once, for every snapshot
        for _, snapshot in snapshots:
            size, count = sizes.of(snapshot.tree)
            stats.restore_size += size
            stats.total_file_count += count
        stats.total_size = stats.restore_size
    if mode == "raw-data":
        stats.total_size = 0
        data, others = _referenced_blobs(store, [s for _, s in snapshots])
        for blob_id in data | others:
            location = store.lookup(blob_id)
            if location is None:
                stats.missing_blobs.append(blob_id.hex())
                continue
            stats.total_blob_count += 1
            stats.total_size += location.length
            stats.total_uncompressed_size += location.raw_length
            if blob_id in data:
                stats.data_uncompressed_size += location.raw_length
    elif mode in ("files-by-contents", "blobs-per-file"):
        contents: set[tuple[bytes, ...]] = set()
        blobs: set[bytes] = set()
        for node in distinct_trees_nodes(store, [snapshot.tree for _, snapshot in snapshots]):
            if node.type != "file" or tuple(node.content) in contents:
                continue
            contents.add(tuple(node.content))
            stats.total_file_count += 1
            if mode == "files-by-contents":
                stats.total_size += node.size
                continue
            for blob_id in node.content:
                if blob_id not in blobs:
                    blobs.add(blob_id)
                    location = store.lookup(blob_id)
                    stats.total_size += location.raw_length if location else 0
        stats.total_blob_count = len(blobs)
    return stats
