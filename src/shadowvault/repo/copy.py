"""Copying snapshots from one repository to another (restic's `copy`).

Blob ids are keyed with each repository's own secret and every object is sealed under its own key, so
nothing can be copied as stored bytes: each blob is read (and verified) from the source, then saved in
the destination, which computes its own id and stores it only if it does not hold it already. Trees
name their blobs, so each is rewritten with the destination's ids (a tree keeps its content, its id
changes). The blobs keep the source's chunk boundaries (see docs/coming-from-restic-and-borg.md).

Before a snapshot is copied, the copy of its parent (or of the newest snapshot of the same host and
paths copied before) is walked side by side with its source (trees only, see BlobTranslator.learn):
the file data both share is then known without being read again, so a nightly copy reads what
changed, not the whole snapshot.

A copy records the source snapshot's id in `original` (or the source's own `original`, as restic
does), and a snapshot the destination already has a copy of (the same original, and the same in
all but its tree's ids: time, host, paths, tags, summary) is skipped. The snapshot document is
written after its data is flushed and indexed, so an interrupted copy leaves a valid destination: the
packs finished so far are indexed when the repository closes, and the next copy reuses them.

A snapshot whose trees or data cannot be read from the source (damage) is not copied and the others
are: it is named in the result's `failed` (what it stored meanwhile is unreferenced, for prune). A
failure of the destination stops the copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from shadowvault.errors import NotFoundError, ShadowvaultError, UsageError
from shadowvault.repo.format import BlobType
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Tree

log = logging.getLogger(__name__)

_Read = TypeVar("_Read")


@dataclass
class CopiedSnapshot:
    source_id: str
    copy_id: str  # the snapshot in the destination (new, or the one copied before)
    snapshot: Snapshot  # the source snapshot
    skipped: bool  # already in the destination: nothing was written


@dataclass(frozen=True)
class FailedSnapshot:
    """A source snapshot that could not be copied, and why."""

    source_id: str
    why: str


class _SourceUnreadable(ShadowvaultError):
    """A read from the source failed: the snapshot being copied is given up, the others go on."""


@dataclass
class CopyResult:
    snapshots: list[CopiedSnapshot] = field(default_factory=list)
    failed: list[FailedSnapshot] = field(default_factory=list)
    blobs_added: int = 0
    raw_bytes_added: int = 0
    stored_bytes_added: int = 0
    blobs_read: int = 0  # data blobs read from the source
    bytes_read: int = 0

    @property
    def copied(self) -> list[CopiedSnapshot]:
        return [s for s in self.snapshots if not s.skipped]

    @property
    def skipped(self) -> list[CopiedSnapshot]:
        return [s for s in self.snapshots if s.skipped]


def _newest_of(of_original: dict[str, list[tuple[str, Snapshot]]], original: str) -> str | None:
    """The destination's last listed (or last copied) snapshot of `original`'s lineage, if any."""
    lineage = of_original.get(original)
    return lineage[-1][0] if lineage else None


def _copy_in(copies: Sequence[tuple[str, Snapshot]], snap: Snapshot) -> str | None:
    """Among the destination's snapshots of `snap`'s original, its copy: the same snapshot in all
    but its tree's ids (restic's test). A rewritten, repaired or retagged snapshot shares its
    original's `original` but not its tags or summary, so it is copied too (a rewrite that removed a
    secret must not be skipped because the destination holds the snapshot it was made from)."""
    return next((sid for sid, there in copies if _same_snapshot(there, snap)), None)


def _same_snapshot(a: Snapshot, b: Snapshot) -> bool:
    return (
        a.time == b.time
        and a.host == b.host
        and a.username == b.username
        and sorted(a.paths) == sorted(b.paths)
        and sorted(a.tags) == sorted(b.tags)
        and a.excludes == b.excludes
        and a.summary == b.summary
    )


def original_id(snapshot_id: str, snapshot: Snapshot) -> str:
    """The id a snapshot's copies are known by: its own, or the one it was itself copied from."""
    return snapshot.original or snapshot_id


class BlobTranslator:
    """Source blob id -> destination blob id, storing in the destination what it lacks.

    The map holds every blob seen (64 bytes a blob and a dict's overhead): a copy's memory grows
    with the number of distinct blobs of the copied snapshots.
    """

    def __init__(
        self, source: Repository, destination: Repository, on_blob: Callable[[int], None] | None = None
    ) -> None:
        self._source = source
        self._destination = destination
        self._ids: dict[bytes, bytes] = {}
        self._on_blob = on_blob  # sees each data blob's size once it is in the destination (progress)
        self.blobs_read = 0  # data blobs read from the source (not known from earlier copies)
        self.bytes_read = 0

    def data(self, blob_id: bytes) -> bytes:
        """The destination's id of a DATA blob of the source."""
        found = self._ids.get(blob_id)
        if found is None:
            found = self._store(blob_id, _from_source(self._source.load_blob, blob_id))
        return found

    def _store(self, blob_id: bytes, data: bytes) -> bytes:
        found = self._destination.save_blob(BlobType.DATA, data)
        self._ids[blob_id] = found
        self.blobs_read += 1
        self.bytes_read += len(data)
        if self._on_blob is not None:
            self._on_blob(len(data))
        return found

    def learn(self, source_root: bytes, destination_root: bytes) -> None:
        """Learn the destination's ids of a snapshot copied before by walking its source tree and its
        copy side by side, without reading any file data: an entry of the same name and type whose
        content has as many chunks (of the same sizes, still stored) holds the same blobs in the same
        order. A copy that `repair snapshots` rewrote has no content where it lost some, so nothing
        is learnt there; what is not learnt is simply read and copied."""
        stack = [(source_root, destination_root)]
        walked: set[bytes] = set()
        while stack:
            source_id, destination_id = stack.pop()
            if source_id in walked:
                continue
            walked.add(source_id)
            try:
                ours, theirs = self._source.load_tree(source_id), self._destination.load_tree(destination_id)
            except ShadowvaultError as err:
                log.debug("not learning from tree %s: %s", source_id.hex()[:16], err)
                continue
            copied = {node.name: node for node in theirs.nodes}
            for node in ours.nodes:
                twin = copied.get(node.name)
                if twin is None or twin.type != node.type:
                    continue
                if node.subtree is not None and twin.subtree is not None:
                    stack.append((node.subtree, twin.subtree))
                if len(node.content) == len(twin.content):
                    for blob_id, copy_id in zip(node.content, twin.content, strict=True):
                        if blob_id not in self._ids and self._same_blob(blob_id, copy_id):
                            self._ids[blob_id] = copy_id

    def _same_blob(self, blob_id: bytes, copy_id: bytes) -> bool:
        """Same size, and the copy still stored where it may be referenced (not in a pack that a
        running prune is deleting: `has_blob` is what deduplication trusts)."""
        size = self._source.blob_size(blob_id)
        return (
            size is not None
            and size == self._destination.blob_size(copy_id)
            and self._destination.has_blob(copy_id)
        )

    def copy_data(self, blob_ids: Iterable[bytes]) -> None:
        """Copy the blobs not copied yet, reading each source pack with as few range reads as it
        allows (one request for many small files on S3, instead of one per blob)."""
        by_pack: dict[str, list[bytes]] = {}
        for blob_id in blob_ids:
            location = None if blob_id in self._ids else self._source.lookup(blob_id)
            if location is not None:
                by_pack.setdefault(location.pack, []).append(blob_id)
        for pack_id, wanted in by_pack.items():
            for loaded in self._source.load_pack_blobs(pack_id, wanted):
                if loaded.data is None:
                    error = loaded.error or NotFoundError(f"blob {loaded.id.hex()[:16]} cannot be read")
                    raise _SourceUnreadable(str(error)) from error
                if loaded.id not in self._ids:
                    self._store(loaded.id, loaded.data)

    def tree(self, root: bytes) -> bytes:
        """The destination's id of a source tree, its subtrees and their content copied first.
        Iterative (a deep directory hierarchy must not hit Python's recursion limit)."""
        stack: list[tuple[bytes, Tree | None]] = [(root, None)]
        while stack:
            tree_id, tree = stack[-1]
            if tree_id in self._ids:
                stack.pop()
                continue
            if tree is None:
                tree = _from_source(self._source.load_tree, tree_id)
                stack[-1] = (tree_id, tree)
                pending = [
                    n.subtree for n in tree.nodes if n.subtree is not None and n.subtree not in self._ids
                ]
                if pending:
                    stack.extend((subtree, None) for subtree in pending)
                    continue
            self.copy_data(blob for node in tree.nodes for blob in node.content)
            nodes = [
                msgspec.structs.replace(
                    node,
                    content=[self.data(blob) for blob in node.content],
                    subtree=None if node.subtree is None else self._ids[node.subtree],
                )
                for node in tree.nodes
            ]
            self._ids[tree_id] = self._destination.save_tree(Tree(nodes=nodes))
            stack.pop()
        return self._ids[root]


def copy_snapshots(
    source: Repository,
    destination: Repository,
    selected: Sequence[tuple[str, Snapshot]],
    *,
    on_snapshot: Callable[[CopiedSnapshot], None] | None = None,
    on_blob: Callable[[int], None] | None = None,
) -> CopyResult:
    """Copy `selected` (snapshots of `source`, oldest first) into `destination` (opened for writing),
    skipping those it already has. `on_snapshot` sees each one as it is done, `on_blob` the size of
    each data blob read from the source once the destination has it."""
    if source.id == destination.id:
        raise UsageError("the source and the destination are the same repository")
    destination_snapshots = dict(destination.list_snapshots())
    # original -> the destination's snapshots of it (a copy, and copies of its rewritten, repaired
    # or retagged versions), as listed, then as this run copies them
    of_original: dict[str, list[tuple[str, Snapshot]]] = {}
    for sid, snap in destination_snapshots.items():
        of_original.setdefault(original_id(sid, snap), []).append((sid, snap))
    source_snapshots = source.list_snapshots()
    source_originals = {sid: original_id(sid, snap) for sid, snap in source_snapshots}
    # destination id -> (the source snapshot it is a copy of, its source id): what `learn` walks
    copied_before = {
        of_original[original_id(sid, snap)][-1][0]: (snap, sid)
        for sid, snap in source_snapshots
        if original_id(sid, snap) in of_original
    }
    learnt: set[str] = set()
    translator = BlobTranslator(source, destination, on_blob)
    start = (
        destination.stats.blobs_added,
        destination.stats.raw_bytes_added,
        destination.stats.stored_bytes_added,
    )
    result = CopyResult()
    for source_id, snap in selected:
        original = original_id(source_id, snap)
        existing = _copy_in(of_original.get(original, []), snap)
        if existing is not None:
            done = CopiedSnapshot(source_id, existing, snap, skipped=True)
        else:
            parent = snap.parent and _newest_of(of_original, source_originals.get(snap.parent, snap.parent))
            model = _copied_model(source_id, snap, copied_before, parent)
            if model is not None and model not in learnt and snap.tree:
                learnt.add(model)
                translator.learn(copied_before[model][0].tree, destination_snapshots[model].tree)
            try:
                copy = msgspec.structs.replace(
                    snap,
                    tree=translator.tree(snap.tree) if snap.tree else b"",
                    manifest=translator.data(snap.manifest) if snap.manifest else None,
                    parent=parent or None,
                    original=original,
                )
            except _SourceUnreadable as err:
                log.debug("snapshot %s cannot be copied: %s", source_id[:8], err)  # the command says it
                result.failed.append(FailedSnapshot(source_id, str(err)))
                continue
            copy_id = destination.save_snapshot(copy)  # flushes first: the snapshot is the commit point
            of_original.setdefault(original, []).append((copy_id, copy))
            destination_snapshots[copy_id] = copy
            copied_before[copy_id] = (snap, source_id)
            log.info("copied snapshot %s as %s", source_id[:8], copy_id[:8])
            done = CopiedSnapshot(source_id, copy_id, snap, skipped=False)
        result.snapshots.append(done)
        if on_snapshot is not None:
            on_snapshot(done)
    result.blobs_read, result.bytes_read = translator.blobs_read, translator.bytes_read
    stats = destination.stats
    result.blobs_added = stats.blobs_added - start[0]
    result.raw_bytes_added = stats.raw_bytes_added - start[1]
    result.stored_bytes_added = stats.stored_bytes_added - start[2]
    return result


def _from_source(read: Callable[[bytes], _Read], blob_id: bytes) -> _Read:
    """`read(blob_id)` from the source, its failure marked as the source's (see _SourceUnreadable)."""
    try:
        return read(blob_id)
    except ShadowvaultError as err:
        raise _SourceUnreadable(str(err)) from err


def _copied_model(
    source_id: str, snap: Snapshot, copied_before: dict[str, tuple[Snapshot, str]], parent: str | None
) -> str | None:
    """The copy (a destination id) to learn ids from before copying `snap`: the copy of its parent,
    else of the newest snapshot of the same host and paths copied before, else none."""
    if parent and parent in copied_before:
        return parent
    alike = [
        (model.time, copy_id)
        for copy_id, (model, model_id) in copied_before.items()
        if model_id != source_id and model.host == snap.host and model.paths == snap.paths
    ]
    return max(alike)[1] if alike else None
