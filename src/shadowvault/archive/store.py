"""What archive/ needs from a repository, as typed protocols: the seam between archive/ and repo/.

`BlobSource` is the read side (restore, listing, diff), `BlobStore` adds writing (backup). The
repository (repo/repository.py) implements both; archive/ depends on these few calls, not on the
engine, and never asks a store what it is.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from typing import TYPE_CHECKING, BinaryIO, Protocol

from shadowvault.repo.format import BlobType, ChunkerParams
from shadowvault.repo.index import BlobLocation
from shadowvault.repo.packer import SaveStats
from shadowvault.repo.reader import LoadedBlob
from shadowvault.repo.sealing import MasterKey
from shadowvault.repo.tree import Tree
from shadowvault.repo.zero_blobs import ZeroBlobs

if TYPE_CHECKING:
    from shadowvault.repo.repository import Repository

Chunker = Callable[[BinaryIO], Iterator[bytes]]  # cuts an open file into chunks


class FileChunker(Protocol):
    """The repository's chunker: its parameters (seed included) are part of the repository."""

    @property
    def params(self) -> ChunkerParams: ...

    def chunk_file(self, source: BinaryIO) -> Iterator[bytes]: ...


class BlobSource(Protocol):
    """Reading blobs and trees, each verified."""

    @property
    def zero_blobs(self) -> ZeroBlobs:
        """The ids that stand for runs of zeros (holes): never read, never written."""
        ...

    def has_blob(self, blob_id: bytes) -> bool:
        """True if the blob is stored intact and may be referenced (the writer contract)."""
        ...

    def has_blobs(self, blob_ids: Collection[bytes]) -> bool:
        """`has_blob` of every id, in one call."""
        ...

    def load_blob(self, blob_id: bytes) -> bytes: ...

    def load_tree(self, tree_id: bytes) -> Tree: ...

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        """Where the best copy is (pack, offset, length): to group reads by pack."""
        ...

    def load_pack_blobs(self, pack_id: str, blob_ids: Iterable[bytes]) -> Iterator[LoadedBlob]:
        """Blobs of one pack, each of its bytes read once, in pack order (errors per blob, not raised)."""
        ...


class BlobStore(BlobSource, Protocol):
    """Reading and writing: what a backup needs."""

    @property
    def chunker(self) -> FileChunker: ...

    @property
    def stats(self) -> SaveStats: ...

    def save_blob(self, kind: BlobType, data: bytes | memoryview) -> bytes: ...

    def save_sealed(
        self, kind: BlobType, blob_id: bytes, sealed: bytes, raw_length: int, compressed: bool
    ) -> None:
        """Store a blob sealed by a seal worker (archive/seal_workers.py) unless already there."""
        ...

    def sealing_keys(self) -> MasterKey | None:
        """The keys seal workers seal with; None: seal in this process only."""
        ...

    def save_tree(self, tree: Tree) -> bytes: ...


def chunker_for(store: BlobStore) -> Chunker:
    """The store's own chunker (its parameters are part of the repository)."""
    return store.chunker.chunk_file


def single_chunk_limit(store: BlobStore) -> int:
    """Files up to this size are one chunk whatever the cut points (FastCDC never cuts below its
    minimum), so they are read whole without starting a chunker (which costs ~0.3 ms per call)."""
    return store.chunker.params.min


if TYPE_CHECKING:  # mypy proves the repository is a store; nothing runs

    def _repository_is_a_store(repo: Repository) -> BlobStore:
        return repo
