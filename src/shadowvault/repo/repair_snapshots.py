"""Repair of snapshots that reference unreadable data: copies with what was lost marked in the tree
(restic's semantics); the originals stay unless asked to forget them (docs/repository.md, "Damage
and repair"). Runs in a "repair" session, as the index and pack repairs (repo/repair.py).
"""

from __future__ import annotations

from collections.abc import Collection, Generator, Iterable
from dataclasses import dataclass, field

import msgspec

from shadowvault.errors import ShadowvaultError
from shadowvault.repo.format import BlobType
from shadowvault.repo.repair import start_repair
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot, summary_bytes
from shadowvault.repo.tree import LOST_TO_DAMAGE, Node, Tree, encode_tree, invalid_name

REPAIRED_TAG = "repaired"


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
    start_repair(repo, "repair snapshots")
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


def repaired_originals(snapshots: Iterable[tuple[str, Snapshot]]) -> set[str]:
    """The snapshots a repaired copy was written for (`repair snapshots` without `--forget`)."""
    return {snap.original for _, snap in snapshots if REPAIRED_TAG in snap.tags and snap.original}


def way_out(snapshots: Iterable[tuple[str, Snapshot]], stuck: Collection[str]) -> str:
    """The command that stops the `stuck` snapshots from referencing lost data: `forget` for those
    with a repaired copy already (running `repair snapshots` again only writes another copy),
    `repair snapshots --forget` for the others."""
    copied = repaired_originals(snapshots)
    forget = " ".join(sorted(sid[:8] for sid in stuck if sid in copied))
    repair = " ".join(sorted(sid[:8] for sid in stuck if sid not in copied))
    steps = [f"`shadowvault forget {forget}` (its repaired copy keeps the rest)"] if forget else []
    if repair:
        steps.append(f"`shadowvault repair snapshots --forget {repair}` (copies without what was lost)")
    return " and ".join(steps)
