"""Figures of snapshots whose trees are read once each, however many paths reach them.

A snapshot is a DAG: the same listing (a directory backed up twice, or a crafted tree whose 40
levels each hold two entries for the level below: 2^40 paths) may be reached by many paths. A
walk of every path (`listing.walk_tree`) ran for ever on such a tree. `stats` needs no path: the
restore size counts every path, as restic's does, but as sums over each distinct tree, kept per
tree id (~200 B a directory, for the command's run); what counts content counts each tree once.
The trees are read as a walk reads them: below an entry with an unsafe name nothing is counted
(a restore skips it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from shadowvault.archive.tree_paths import TreeReader
from shadowvault.repo.tree import Node, invalid_name

LinkKey = tuple[int, int]  # (device, inode) of a hard-linked file


def _descends(node: Node) -> bytes | None:
    """The subtree a walk enters below `node`, if any."""
    if node.type == "dir" and node.subtree and invalid_name(node.name) is None:
        return node.subtree
    return None


class RestoreSizes:
    """(bytes, entries other than directories) a restore of a tree writes: every path counted, a
    hard-linked file's bytes once per snapshot. Each tree is read once for all the snapshots asked
    about: its totals are kept, and those of a tree holding hard links are completed per snapshot."""

    def __init__(self, store: TreeReader) -> None:
        self._store = store
        # tree id -> (bytes of the files not hard-linked, entries but directories, every path
        # counted; whether a hard-linked file is below)
        self._totals: dict[bytes, tuple[int, int, bool]] = {}
        # of the trees with a hard-linked file below: their own such files, and their subtrees
        self._links: dict[bytes, list[tuple[LinkKey, int]]] = {}
        self._below: dict[bytes, list[bytes]] = {}

    def of(self, root: bytes | None) -> tuple[int, int]:
        if not root:
            return 0, 0
        size, count, linked = self._total(root)
        if linked:
            size += sum(self._linked_files(root).values())
        return size, count

    def _total(self, root: bytes) -> tuple[int, int, bool]:
        """The totals of `root`, its subtrees' first (post-order, from a list: no recursion)."""
        totals = self._totals
        stack: list[tuple[bytes, tuple[int, int, list[bytes]] | None]] = [(root, None)]
        while stack:
            tree_id, own = stack[-1]
            if tree_id in totals:
                stack.pop()
                continue
            if own is None:
                own = self._own(tree_id)
                stack[-1] = (tree_id, own)
                stack.extend((sub, None) for sub in own[2] if sub not in totals)
                continue
            size, count, subs = own
            linked = tree_id in self._links
            for sub in subs:
                sub_size, sub_count, sub_linked = totals[sub]
                size, count, linked = size + sub_size, count + sub_count, linked or sub_linked
            totals[tree_id] = (size, count, linked)
            if linked:
                self._below[tree_id] = subs
            stack.pop()
        return totals[root]

    def _own(self, tree_id: bytes) -> tuple[int, int, list[bytes]]:
        """One listing's own figures (its hard-linked files kept aside) and the subtrees entered."""
        size = count = 0
        links: list[tuple[LinkKey, int]] = []
        subs: list[bytes] = []
        for node in self._store.load_tree(tree_id).nodes:
            if node.type == "dir":
                sub = _descends(node)
                if sub is not None:
                    subs.append(sub)
                continue
            count += 1
            if node.type != "file":
                continue
            if node.nlink > 1 and node.inode:
                links.append(((node.device, node.inode), node.size))
            else:
                size += node.size
        if links:
            self._links[tree_id] = links
        return size, count, subs

    def _linked_files(self, root: bytes) -> dict[LinkKey, int]:
        """The hard-linked files below `root`, each once, with its size (the trees that hold some)."""
        found: dict[LinkKey, int] = {}
        seen: set[bytes] = set()
        stack = [root]
        while stack:
            tree_id = stack.pop()
            if tree_id in seen or not self._totals[tree_id][2]:
                continue
            seen.add(tree_id)
            for key, size in self._links.get(tree_id, ()):
                found.setdefault(key, size)
            stack.extend(self._below[tree_id])
        return found


def distinct_trees_nodes(store: TreeReader, roots: Iterable[bytes]) -> Iterator[Node]:
    """The entries of every tree below `roots`, each tree read once (however many paths and
    snapshots reach it), as a walk enters them: for figures that count content, not paths."""
    seen: set[bytes] = set()
    stack = [root for root in roots if root]
    while stack:
        tree_id = stack.pop()
        if tree_id in seen:
            continue
        seen.add(tree_id)
        for node in store.load_tree(tree_id).nodes:
            yield node
            sub = _descends(node)
            if sub is not None and sub not in seen:
                stack.append(sub)
