"""A snapshot's trees without the entries that exclude patterns match: the tree half of `rewrite`.

Each directory listing that loses an entry (or whose subdirectory changed) is written anew; every
other tree, and every file's content, is referenced as it is, so a rewrite stores a few small TREE
blobs and no data. Paths are matched as a backup matches them (archive/patterns.py), on the paths
`ls` shows: a crafted name that is not one path component is matched in its escaped form and never
walked into (archive/listing.py). The walk keeps its own stack, not Python's: a tree as deep as a
crafted repository likes costs memory, not a RecursionError. Results are kept per (tree, path), so a
directory that many snapshots share is read and rewritten once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from shadowvault.archive.listing import entry_path
from shadowvault.archive.patterns import PathFilter
from shadowvault.archive.tree_paths import TreeReader
from shadowvault.repo.tree import Node, Tree, invalid_name

PATHS_KEPT = 10_000  # matched paths named per snapshot (every one is counted)

SaveTree = Callable[[Tree], bytes]  # writes a tree, returns its id


def file_bytes(node: Node) -> int:
    """The size a regular file claims (a crafted negative size counts as none)."""
    return max(0, node.size) if node.type == "file" and isinstance(node.size, int) else 0


def _walks_into(node: Node) -> bool:
    return node.type == "dir" and bool(node.subtree) and invalid_name(node.name) is None


@dataclass
class Removal:
    """What leaving out the matching entries takes from one tree and everything below it."""

    tree_id: bytes  # the tree without them (the same id when nothing matched)
    paths: list[bytes] = field(default_factory=list)  # the entries matched (the first PATHS_KEPT)
    matched: int = 0  # entries matched
    entries: int = 0  # entries removed: those matched and everything below a matched directory
    bytes: int = 0  # the sizes of the regular files removed

    def add(self, other: Removal) -> None:
        room = PATHS_KEPT - len(self.paths)
        if room > 0:
            self.paths.extend(other.paths[:room])
        self.matched += other.matched
        self.entries += other.entries
        self.bytes += other.bytes


@dataclass
class _Frame:
    """A directory being rewritten: its listing, how far the walk got, what it keeps and removes."""

    tree_id: bytes
    path: bytes
    nodes: list[Node]
    removal: Removal
    kept: list[Node] = field(default_factory=list)
    at: int = 0
    changed: bool = False

    def absorb(self, child: Removal) -> None:
        """The subdirectory at `at` came back rewritten as `child`."""
        node = self.nodes[self.at]
        if child.tree_id != node.subtree:
            node = msgspec.structs.replace(node, subtree=child.tree_id)
            self.changed = True
        self.kept.append(node)
        self.removal.add(child)
        self.at += 1


class TreeFilter:
    """Rewrites trees without what `path_filter` excludes, writing each new tree with `save`."""

    def __init__(self, store: TreeReader, path_filter: PathFilter, save: SaveTree) -> None:
        self.store = store
        self.filter = path_filter
        self.save = save
        self._done: dict[tuple[bytes, bytes], Removal] = {}
        self._below: dict[bytes, tuple[int, int]] = {}  # tree id -> (entries, file bytes) below it

    def rewrite(self, tree_id: bytes, path: bytes = b"/") -> Removal:
        """The tree at snapshot path `path` without the matching entries (IntegrityError, NotFoundError
        or RepositoryError when a tree cannot be read: nothing is written for it)."""
        done = self._done.get((tree_id, path))
        if done is not None:
            return done
        stack = [self._open(tree_id, path)]
        while True:
            frame = stack[-1]
            if frame.at < len(frame.nodes):
                child = self._step(frame)
                if child is not None:
                    stack.append(child)
                continue
            finished = self._close(frame)
            stack.pop()
            if not stack:
                return finished
            stack[-1].absorb(finished)

    def _open(self, tree_id: bytes, path: bytes) -> _Frame:
        return _Frame(tree_id, path, self.store.load_tree(tree_id).nodes, Removal(tree_id))

    def _step(self, frame: _Frame) -> _Frame | None:
        """Judge the entry at `frame.at`; a directory not yet rewritten comes back as a new frame."""
        node = frame.nodes[frame.at]
        path = entry_path(frame.path, node.name)
        if self.filter.excluded(path):
            entries, size = self.below(node.subtree) if node.type == "dir" and node.subtree else (0, 0)
            frame.removal.add(Removal(frame.tree_id, [path], 1, 1 + entries, file_bytes(node) + size))
            frame.changed = True
            frame.at += 1
            return None
        if _walks_into(node):
            assert node.subtree is not None
            done = self._done.get((node.subtree, path))
            if done is None:
                return self._open(node.subtree, path)
            frame.absorb(done)
            return None
        frame.kept.append(node)
        frame.at += 1
        return None

    def _close(self, frame: _Frame) -> Removal:
        removal = frame.removal
        if frame.changed:
            removal.tree_id = self.save(Tree(nodes=frame.kept))
        self._done[(frame.tree_id, frame.path)] = removal
        return removal

    def below(self, tree_id: bytes) -> tuple[int, int]:
        """(entries, file bytes) below a directory: what removing it removes besides itself. Each tree
        is counted once, so a crafted listing that repeats one subtree costs no more to count."""
        if tree_id in self._below:
            return self._below[tree_id]
        order: list[tuple[bytes, list[Node]]] = []  # trees in post-order (children first)
        stack: list[tuple[bytes, list[Node], int]] = [(tree_id, self.store.load_tree(tree_id).nodes, 0)]
        seen = {tree_id}

        def unvisited(node: Node) -> bool:
            sub = node.subtree
            return node.type == "dir" and bool(sub) and sub not in seen and sub not in self._below

        while stack:
            tid, nodes, at = stack.pop()
            while at < len(nodes) and not unvisited(nodes[at]):
                at += 1
            if at == len(nodes):
                order.append((tid, nodes))
                continue
            sub = nodes[at].subtree
            assert sub is not None
            seen.add(sub)
            stack.append((tid, nodes, at + 1))
            stack.append((sub, self.store.load_tree(sub).nodes, 0))
        for tid, nodes in order:
            entries = size = 0
            for node in nodes:
                below = self._below.get(node.subtree or b"", (0, 0)) if node.type == "dir" else (0, 0)
                entries += 1 + below[0]
                size += file_bytes(node) + below[1]
            self._below[tid] = (entries, size)
        return self._below[tree_id]
