"""Find a path in a snapshot's trees: what `restore SNAP:PATH`, `ls SNAP PATH` and writers start from.

A snapshot path names entries; it is never resolved: `.` and `..` are refused, and a crafted tree
may hold an entry called `..` or one name twice, which no path can then name.
"""

from __future__ import annotations

from typing import Protocol

from shadowvault.errors import IntegrityError, NotFoundError, RepositoryError, UsageError
from shadowvault.repo.tree import Node, Tree, invalid_name


class TreeReader(Protocol):
    def load_tree(self, tree_id: bytes) -> Tree: ...


def join(parent: bytes, name: bytes) -> bytes:
    """The snapshot path of `name` in the directory `parent`."""
    return parent.rstrip(b"/") + b"/" + name


def text(path: bytes) -> str:
    return path.decode("utf-8", errors="backslashreplace")  # for messages: \xNN for invalid bytes


def raw_path(subpath: str | bytes) -> bytes:
    return subpath.encode("utf-8", errors="surrogateescape") if isinstance(subpath, str) else subpath


def find_node(store: TreeReader, root_tree: bytes, subpath: str | bytes) -> Node | None:
    """The node at `subpath` in the snapshot (None for the root itself); NotFoundError when absent."""
    raw = raw_path(subpath)
    parts = [p for p in raw.split(b"/") if p]
    for part in parts:
        if (why := invalid_name(part)) is not None:
            raise UsageError(f"{text(raw)}: not a snapshot path ({why})")
    node: Node | None = None
    tree_id: bytes | None = root_tree
    walked = b""
    for part in parts:
        if tree_id is None:
            raise NotFoundError(f"{text(raw)}: {text(walked)} is not a directory in the snapshot")
        try:
            tree = store.load_tree(tree_id)
        except IntegrityError as err:
            raise RepositoryError(
                f"{text(raw)}: the listing of {text(walked or b'/')} is damaged: {err}"
            ) from err
        matches = [n for n in tree.nodes if n.name == part]
        walked += b"/" + part
        if not matches:
            raise NotFoundError(f"{text(raw)}: no such path in the snapshot")
        if len(matches) > 1:
            raise RepositoryError(f"{text(raw)}: {text(walked)} appears more than once in the snapshot")
        node = matches[0]
        tree_id = node.subtree if node.type == "dir" else None
    return node
