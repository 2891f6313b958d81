"""Repair: what to do once something is already damaged (docs/repository.md, "Damage and repair").

- `repair_index` rebuilds the index from the packs' own headers (a lost or damaged index file
  otherwise makes intact packs unreachable, and prune would delete them as leftovers).
- `repair_packs` salvages the readable blobs of damaged packs into new packs, drops the rest from
  the index (so the next backup stores them again), and deletes the damaged packs.
- `repair_snapshots` writes copies of snapshots that reference unreadable data, with what was lost
  marked in the tree (restic's semantics); the originals stay unless asked to forget them.

Each runs in a "repair" session: never beside a prune or another repair, safe beside backups
(index files are replaced successor first, and only the files read are removed).
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass, field

import msgspec

from shadowvault.errors import NotFoundError, RepositoryError, ShadowvaultError, UsageError
from shadowvault.repo.damage import replace_damage
from shadowvault.repo.format import BlobType, IndexPack, PackBlob
from shadowvault.repo.pack import pack_name, parse_header, read_header
from shadowvault.repo.repository import Repository
from shadowvault.repo.session import list_sessions, refuse_concurrent_maintenance
from shadowvault.repo.snapshot import Snapshot, summary_bytes
from shadowvault.repo.tree import LOST_TO_DAMAGE, Node, Tree, encode_tree, invalid_name

log = logging.getLogger(__name__)

REPAIRED_TAG = "repaired"


def _start(repo: Repository, what: str) -> None:
    if repo.session is None or repo.session.doc.kind != "repair":
        raise RepositoryError(f"{what} needs the repository opened for writing (kind 'repair')")
    others = [s for s in list_sessions(repo.backend, repo.sealer) if s.name != repo.session.name]
    refuse_concurrent_maintenance(others, what)


def _read_index(repo: Repository) -> tuple[list[str], dict[str, IndexPack], list[str]]:
    """(index files listed, entries of the readable ones by pack, unreadable files)."""
    names = repo.index_files()
    packs: dict[str, IndexPack] = {}
    unreadable: list[str] = []
    for name in names:
        try:
            for pack in repo.load_index_file(name).packs:
                packs.setdefault(pack.id, pack)
        except NotFoundError:
            continue
        except ShadowvaultError as err:
            log.warning("%s: %s", name, err)
            unreadable.append(name)
    return names, packs, unreadable


def _replace_index(repo: Repository, old_names: list[str], packs: list[IndexPack]) -> list[str]:
    """Write `packs` as new index files, then remove the files read (the successor comes first)."""
    written = repo.save_index_files(packs)
    for name in old_names:
        if name not in written:
            repo.backend.remove(name)
    return written


# ---------------------------------------------------------------------------------------- index


@dataclass
class RepairIndexResult:
    packs: int = 0
    packs_read: int = 0  # headers read (packs the index did not know, or all with read_all_packs)
    packs_added: int = 0  # packs that had no (valid) index entry
    entries_dropped: int = 0  # entries of packs that no longer exist
    unreadable_index_files: list[str] = field(default_factory=list)
    unreadable_packs: list[str] = field(default_factory=list)  # header damaged: left for prune

    def summary(self) -> str:
        text = (
            f"indexed {self.packs} packs: {self.packs_added} added from their headers,"
            f" {self.entries_dropped} entries of missing packs dropped"
        )
        if self.unreadable_index_files:
            text += f", {len(self.unreadable_index_files)} unreadable index files replaced"
        if self.unreadable_packs:
            text += (
                f"; {len(self.unreadable_packs)} packs have an unreadable header and could not be indexed"
                " (`shadowvault repair snapshots` then prune)"
            )
        return text


def repair_index(repo: Repository, *, read_all_packs: bool = False) -> RepairIndexResult:
    """Rebuild the index: keep the entries of readable index files whose pack exists with the indexed
    size, read the header of every other pack (of every pack with `read_all_packs`)."""
    _start(repo, "repair index")
    result = RepairIndexResult()
    on_disk = {info.name.rsplit("/", 1)[1]: info for info in repo.backend.list("data/")}
    names, known, unreadable = _read_index(repo)
    result.unreadable_index_files = unreadable
    packs: list[IndexPack] = []
    for pack_id, info in sorted(on_disk.items()):
        entry = known.get(pack_id)
        if entry is not None and entry.size == info.size and not read_all_packs:
            packs.append(entry)
            continue
        result.packs_read += 1
        try:
            blobs = read_header(repo.backend, repo.sealer, pack_id)
        except NotFoundError:
            continue  # deleted meanwhile (a backup's failed pack; prune is excluded)
        except ShadowvaultError as err:
            log.warning("pack %s: %s", pack_id[:16], err)
            result.unreadable_packs.append(pack_id)
            continue
        if entry is None or entry.size != info.size:
            result.packs_added += 1
        packs.append(
            IndexPack(id=pack_id, size=info.size, blobs=blobs, pending=entry.pending if entry else None)
        )
    result.entries_dropped = sum(1 for pack_id in known if pack_id not in on_disk)
    result.packs = len(packs)
    _replace_index(repo, names, packs)
    if repo.damage.files:
        replace_damage(repo.backend, repo.sealer, repo.damage, keep=[p.id for p in packs])
    repo.reload_index()
    return result


# ---------------------------------------------------------------------------------------- packs


@dataclass
class RepairPacksResult:
    packs: list[str] = field(default_factory=list)  # the packs repaired (and deleted)
    blobs_salvaged: int = 0
    blobs_lost: int = 0  # dropped from the index: the next backup stores them again if it still can

    def summary(self) -> str:
        if not self.packs:
            return "no damaged packs to repair"
        text = (
            f"repaired {len(self.packs)} packs: {self.blobs_salvaged} blobs salvaged,"
            f" {self.blobs_lost} blobs lost"
        )
        if self.blobs_lost:
            text += (
                "; run a backup (it stores again what the sources still have), then"
                " `shadowvault check` and `shadowvault repair snapshots`"
            )
        return text


def repair_packs(repo: Repository, pack_ids: list[str] | None = None) -> RepairPacksResult:
    """Salvage the damaged packs (`pack_ids`, or every pack with recorded damage: run
    `check --read-data` first to find them)."""
    _start(repo, "repair packs")
    result = RepairPacksResult()
    names, packs, unreadable = _read_index(repo)
    if unreadable:
        raise RepositoryError(
            f"repair packs refuses to run: {len(unreadable)} index files are unreadable; run"
            " `shadowvault repair index` first"
        )
    if pack_ids:
        targets = []
        for ref in pack_ids:
            matches = [pid for pid in packs if pid.startswith(ref.lower())]
            if len(matches) != 1:
                raise UsageError(f"{ref!r} names {'no' if not matches else 'more than one'} indexed pack")
            targets.append(matches[0])
    else:
        targets = sorted(set(repo.damage.packs()) & packs.keys())
    if not targets:
        if repo.damage.packs() - packs.keys():  # records of packs that are gone
            replace_damage(repo.backend, repo.sealer, repo.damage, keep=packs)
        return result
    chosen = set(targets)
    copied: set[bytes] = set()
    for pack_id in targets:
        salvaged, lost = _salvage(repo, packs[pack_id], chosen, copied)
        result.blobs_salvaged += salvaged
        result.blobs_lost += lost
        result.packs.append(pack_id)
    already = len(repo.written_index_files)
    repo.flush()  # the salvaged blobs' new packs and their index are durable first
    new_files = repo.written_index_files[already:]
    remaining = [p for pid, p in packs.items() if pid not in chosen]
    for name in new_files:
        remaining.extend(repo.load_index_file(name).packs)
    _replace_index(repo, names + new_files, remaining)
    replace_damage(repo.backend, repo.sealer, repo.damage, keep=[p.id for p in remaining])
    for pack_id in targets:
        repo.backend.remove(pack_name(pack_id))
    repo.reload_index()
    return result


def _salvage(repo: Repository, pack: IndexPack, chosen: set[str], copied: set[bytes]) -> tuple[int, int]:
    """Copy the verifiable blobs of `pack` that no intact pack outside `chosen` holds (and that this
    run has not copied yet); returns (salvaged, lost)."""
    try:
        raw = repo.backend.load(pack_name(pack.id))
    except NotFoundError:
        raw = b""
    own = _own_header(repo, pack.id, raw)
    salvaged = lost = 0
    for listed in pack.blobs:
        elsewhere = listed.id in copied or any(
            loc.pack not in chosen and not repo.index.is_damaged(loc, listed.id)
            for loc in repo.index.locations(listed.id)
        )
        found = _verified(repo, pack.id, raw, [listed, *own.get(listed.id, [])])
        if found is None:
            lost += 0 if elsewhere else 1
            continue
        b, sealed = found
        if not elsewhere:
            repo.copy_sealed_blob(BlobType(b.type), b.id, sealed, b.raw_length, b.compressed)
            copied.add(b.id)
            salvaged += 1
    return salvaged, lost


def _own_header(repo: Repository, pack_id: str, raw: bytes) -> dict[bytes, list[PackBlob]]:
    """The entries of the pack's own header by blob id (none when it is unreadable): where the index
    is what lies (an index file crafted or written wrong, the pack intact), the header still finds
    the blobs, and the pack is not deleted with blobs that were never damaged."""
    try:
        entries = parse_header(repo.sealer, raw, len(raw), f"pack {pack_id}")
    except ShadowvaultError:
        return {}
    own: dict[bytes, list[PackBlob]] = {}
    for entry in entries:
        own.setdefault(entry.id, []).append(entry)
    return own


def _verified(
    repo: Repository, pack_id: str, raw: bytes, candidates: list[PackBlob]
) -> tuple[PackBlob, bytes] | None:
    """The first of `candidates` (places of one blob in the pack) whose sealed bytes verify."""
    for candidate in candidates:
        try:
            return candidate, repo.verified_sealed(pack_id, candidate, raw)
        except ShadowvaultError:
            continue
    return None


# ------------------------------------------------------------------------------------ snapshots


@dataclass
class RepairedSnapshot:
    original: str
    repaired: str | None  # None in a dry run
    lost: list[str]  # what was lost, as paths with the reason


@dataclass
class RepairSnapshotsResult:
    dry_run: bool
    checked: int = 0
    repaired: list[RepairedSnapshot] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would repair" if self.dry_run else "repaired"
        text = f"checked {self.checked} snapshots, {verb} {len(self.repaired)}"
        if self.forgotten:
            text += f", forgot {len(self.forgotten)} originals"
        elif self.repaired and not self.dry_run:
            text += " (the originals are kept: `--forget` removes them)"
        return text


@dataclass
class _Rewritten:
    """A tree rewritten without what is lost: its new id, the lost paths with why, the file bytes lost
    (as far as known: the sizes below a lost directory listing are lost with it)."""

    tree_id: bytes | None
    lost: list[str]
    lost_bytes: int


# a tree's rewriting: yields (subtree, its path) to have a subdirectory rewritten, is sent the result
_Ask = tuple[bytes, str]
_Steps = Generator[_Ask, "_Rewritten | None", "_Rewritten"]


class _TreeRewriter:
    """Rewrites a tree without what cannot be read: a file whose content is lost keeps its name
    with `error` set and no content; an unreadable directory becomes an empty one with `error`;
    an entry with an unsafe or duplicate name is dropped. Each tree is rewritten once."""

    def __init__(self, repo: Repository, dry_run: bool) -> None:
        self.repo = repo
        self.dry_run = dry_run
        self._done: dict[bytes, _Rewritten] = {}
        self._empty: bytes | None = None

    def blob_readable(self, blob_id: bytes) -> bool:
        location = self.repo.index.lookup(blob_id)
        return location is not None and not self.repo.index.is_damaged(location, blob_id)

    def empty_tree(self) -> bytes:
        if self._empty is None:
            self._empty = self._save(Tree(nodes=[]))
        return self._empty

    def _save(self, tree: Tree) -> bytes:
        data = encode_tree(tree)
        return self.repo.blob_id(data) if self.dry_run else self.repo.save_blob(BlobType.TREE, data)

    def rewrite(self, tree_id: bytes, path: str) -> _Rewritten:
        """The tree without what is lost (tree_id None when the tree itself cannot be read).
        Each tree's rewriting is a generator that asks for its subdirectories' rewriting by yielding
        them, run from a list here rather than by recursion: a crafted tree thousands of
        directories deep ended `repair snapshots` in a RecursionError."""
        steps = [self._rewrite(tree_id, path)]
        answer: _Rewritten | None = None
        while True:
            try:
                subtree, subpath = steps[-1].send(answer)
            except StopIteration as finished:
                steps.pop()
                answer = finished.value
                if not steps:
                    assert answer is not None
                    return answer
                continue
            steps.append(self._rewrite(subtree, subpath))
            answer = None

    def _rewrite(self, tree_id: bytes, path: str) -> _Steps:
        if tree_id in self._done:
            done = self._done[tree_id]
            return _Rewritten(done.tree_id, [f"{path}{item}" for item in done.lost], done.lost_bytes)
        try:
            tree = self.repo.load_tree(tree_id)
        except ShadowvaultError:
            return _Rewritten(None, [], 0)
        loss = _Rewritten(tree_id, [], 0)  # lost paths relative to this tree
        nodes: list[Node] = []
        seen: set[bytes] = set()
        for node in tree.nodes:
            name = node.display_name
            why = invalid_name(node.name) or ("a duplicate name" if node.name in seen else None)
            if why is not None:
                loss.lost.append(f"/{name!r}: dropped, {why}")
                loss.lost_bytes += node.size if node.type == "file" else 0
                continue
            seen.add(node.name)
            nodes.append((yield from self._node(node, name, loss)))
        if loss.lost:
            loss.tree_id = self._save(Tree(nodes=nodes))
        self._done[tree_id] = loss
        return _Rewritten(loss.tree_id, [f"{path}{item}" for item in loss.lost], loss.lost_bytes)

    def _node(self, node: Node, name: str, loss: _Rewritten) -> Generator[_Ask, _Rewritten | None, Node]:
        if node.type == "dir" and node.subtree is not None:
            sub = yield node.subtree, f"/{name}"
            assert sub is not None  # what rewrite sends back for a subdirectory
            if sub.tree_id is None:
                loss.lost.append(f"/{name}/: directory listing lost")
                return _with(node, subtree=self.empty_tree(), error=f"directory listing {LOST_TO_DAMAGE}")
            loss.lost.extend(sub.lost)
            loss.lost_bytes += sub.lost_bytes
            return node if sub.tree_id == node.subtree else _with(node, subtree=sub.tree_id)
        if node.content and not all(self.blob_readable(b) for b in node.content):
            gone = sum(1 for b in node.content if not self.blob_readable(b))
            loss.lost.append(f"/{name}: content lost ({gone} of {len(node.content)} chunks)")
            loss.lost_bytes += node.size
            return _with(
                node,
                content=[],
                size=0,
                sparse=False,
                error=f"content {LOST_TO_DAMAGE} ({gone} of {len(node.content)} chunks)",
            )
        return node


def _with(node: Node, **changes: object) -> Node:
    return msgspec.structs.replace(node, **changes)


def repair_snapshots(
    repo: Repository, refs: list[str] | None = None, *, forget: bool = False, dry_run: bool = False
) -> RepairSnapshotsResult:
    """Write a repaired copy of every snapshot (or of `refs`) that references unreadable data.

    Only what the index and the damage records say is judged (no data is read): run
    `check --read-data` first so damaged blobs are known."""
    _start(repo, "repair snapshots")
    result = RepairSnapshotsResult(dry_run=dry_run)
    chosen = [repo.find_snapshot(ref) for ref in refs] if refs else repo.list_snapshots()
    rewriter = _TreeRewriter(repo, dry_run)
    for sid, snap in chosen:
        result.checked += 1
        lost: list[str] = []
        lost_bytes = 0
        tree = snap.tree
        if tree:
            rewritten = rewriter.rewrite(tree, "")
            lost, lost_bytes = rewritten.lost, rewritten.lost_bytes
            if rewritten.tree_id is None:
                lost = ["/: the root directory listing is lost"]
                lost_bytes = summary_bytes(snap) or 0
            tree = rewritten.tree_id or rewriter.empty_tree()
        manifest = snap.manifest
        if manifest and not rewriter.blob_readable(manifest):
            lost.append("the backup manifest is lost")
            manifest = None
        if not lost:
            continue
        repaired_id = None
        if not dry_run:
            repaired = _repaired_copy(snap, sid, tree, manifest, lost, lost_bytes)
            repaired_id = repo.save_snapshot(repaired)
            if forget:
                repo.remove_snapshot(sid)
                result.forgotten.append(sid)
        result.repaired.append(RepairedSnapshot(sid, repaired_id, lost))
    return result


def _repaired_copy(
    snap: Snapshot, sid: str, tree: bytes, manifest: bytes | None, lost: list[str], lost_bytes: int
) -> Snapshot:
    """The snapshot with the rewritten tree; its size (summary `bytes`) without the bytes lost."""
    summary = dict(snap.summary)
    summary["repaired_lost"] = len(lost)
    summary["repaired_lost_bytes"] = lost_bytes
    size = summary_bytes(snap)
    if size is not None:
        summary["bytes"] = max(0, size - lost_bytes)
    tags = snap.tags if REPAIRED_TAG in snap.tags else [*snap.tags, REPAIRED_TAG]
    return msgspec.structs.replace(
        snap, tree=tree, manifest=manifest, tags=tags, summary=summary, original=snap.original or sid
    )
