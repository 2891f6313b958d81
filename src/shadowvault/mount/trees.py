"""Directories of a snapshot by name: decoded trees kept in a small LRU, paths resolved through them.

The kernel asks for every component of every path it walks; a directory read once is kept as a
name -> node map, so a lookup does not decode its tree again. Entries a crafted tree could hold
that no path can name (`..`, `a/b`, a name twice) are left out.
"""

from __future__ import annotations

import errno
import threading
from collections import OrderedDict
from collections.abc import Sequence

from shadowvault.archive.tree_paths import TreeReader
from shadowvault.repo.tree import Node, duplicate_names, invalid_name

MAX_NODES = 200_000  # entries kept, over all cached directories (a node costs a few hundred bytes)


class TreeCache:
    """Directory listings by tree id (thread-safe)."""

    def __init__(self, store: TreeReader, limit: int = MAX_NODES) -> None:
        self._store = store
        self._limit = limit
        self._dirs: OrderedDict[bytes, dict[bytes, Node]] = OrderedDict()
        self._nodes = 0
        self._lock = threading.Lock()

    def entries(self, tree_id: bytes | None) -> dict[bytes, Node]:
        """The directory's entries by name (ShadowvaultError when its tree cannot be read)."""
        if not tree_id:
            return {}
        with self._lock:
            found = self._dirs.get(tree_id)
            if found is not None:
                self._dirs.move_to_end(tree_id)
                return found
        nodes = self._store.load_tree(tree_id).nodes
        twice = duplicate_names(nodes)
        found = {n.name: n for n in nodes if invalid_name(n.name) is None and n.name not in twice}
        with self._lock:
            if tree_id not in self._dirs:
                self._dirs[tree_id] = found
                self._nodes += len(found)
            while self._nodes > self._limit and len(self._dirs) > 1:  # the newest stays, however large
                _, evicted = self._dirs.popitem(last=False)
                self._nodes -= len(evicted)
        return found

    def resolve(self, root_tree: bytes, parts: Sequence[bytes]) -> Node | None:
        """The node at `parts` below the root tree (None for the root): OSError ENOENT or ENOTDIR."""
        node: Node | None = None
        tree_id: bytes | None = root_tree
        for part in parts:
            if node is not None and node.type != "dir":
                raise OSError(errno.ENOTDIR, "not a directory")
            node = self.entries(tree_id).get(part)
            if node is None:
                raise OSError(errno.ENOENT, "no such entry")
            tree_id = node.subtree
        return node
