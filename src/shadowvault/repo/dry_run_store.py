"""A blob store that counts instead of writing: what `backup --dry-run` archives into.

It chunks, hashes and compresses exactly as the repository would, so the figures (new blobs, bytes
that would be stored) are the ones a real backup would report, but nothing reaches the backend:
the repository may be opened read-only. The new TREE blobs are kept (compressed) so the would-be
snapshot can be compared with its parent; data blobs are only counted.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Iterator
from typing import TYPE_CHECKING

from shadowvault.repo.chunker import Chunker
from shadowvault.repo.compression import compress_if_smaller, decompress
from shadowvault.repo.format import BlobType
from shadowvault.repo.index import BlobLocation
from shadowvault.repo.packer import SaveStats
from shadowvault.repo.reader import LoadedBlob
from shadowvault.repo.repository import Repository
from shadowvault.repo.sealing import OVERHEAD, MasterKey
from shadowvault.repo.tree import Tree, decode_tree, encode_tree

if TYPE_CHECKING:
    from shadowvault.repo.zero_blobs import ZeroBlobs


class DryRunStore:
    """The `BlobStore` of archive/store.py over a repository that is only read."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self.stats = SaveStats()  # what a real backup would have added
        self._new: set[bytes] = set()
        self._trees: dict[bytes, tuple[bytes, bool, int]] = {}  # id -> (payload, compressed, raw length)
        self._lock = threading.Lock()

    @property
    def chunker(self) -> Chunker:
        return self._repo.chunker

    @property
    def zero_blobs(self) -> ZeroBlobs:
        return self._repo.zero_blobs

    def has_blob(self, blob_id: bytes) -> bool:
        with self._lock:
            if blob_id in self._new:
                return True
        return self._repo.has_blob(blob_id)

    def has_blobs(self, blob_ids: Collection[bytes]) -> bool:
        return all(self.has_blob(blob_id) for blob_id in blob_ids)

    def _claim(self, blob_id: bytes) -> bool:
        """True if the blob is new to this dry run (now counted as new), False if known."""
        with self._lock:
            if blob_id in self._new or self._repo.has_blob(blob_id):
                self.stats.blobs_deduplicated += 1
                return False
            self._new.add(blob_id)
            return True

    def save_blob(self, kind: BlobType, data: bytes | memoryview) -> bytes:
        blob_id = self._repo.blob_id(data)
        if not self._claim(blob_id):
            return blob_id
        payload, compressed = compress_if_smaller(data)
        with self._lock:
            self.stats.blobs_added += 1
            self.stats.raw_bytes_added += len(data)
            self.stats.stored_bytes_added += len(payload) + OVERHEAD
            if kind == BlobType.TREE:
                self._trees[blob_id] = (bytes(payload), compressed, len(data))
        return blob_id

    def save_sealed(
        self, kind: BlobType, blob_id: bytes, sealed: bytes, raw_length: int, compressed: bool
    ) -> None:
        if not self._claim(blob_id):
            return
        with self._lock:
            self.stats.blobs_added += 1
            self.stats.raw_bytes_added += raw_length
            self.stats.stored_bytes_added += len(sealed)

    def sealing_keys(self) -> MasterKey | None:
        """None: a dry run seals nothing, it compresses in this process to count."""
        return None

    def save_tree(self, tree: Tree) -> bytes:
        return self.save_blob(BlobType.TREE, encode_tree(tree))

    def load_tree(self, tree_id: bytes) -> Tree:
        with self._lock:
            held = self._trees.get(tree_id)
        if held is None:
            return self._repo.load_tree(tree_id)
        payload, compressed, raw_length = held
        return decode_tree(decompress(payload, raw_length, "tree") if compressed else payload)

    def load_blob(self, blob_id: bytes) -> bytes:
        return self._repo.load_blob(blob_id)

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        return self._repo.lookup(blob_id)

    def load_pack_blobs(self, pack_id: str, blob_ids: Iterable[bytes]) -> Iterator[LoadedBlob]:
        return self._repo.load_pack_blobs(pack_id, blob_ids)

    def flush(self) -> None:
        """Nothing is pending: nothing is written."""
