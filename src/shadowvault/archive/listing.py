"""Walk a snapshot's tree: every entry with its full path, for `ls` and anything that browses.

A crafted tree may hold a name that is not one path component (`../../x`, `..`, a NUL byte): it is
listed with its `/`, NUL and the dots of `..` written as \\xNN (`entry_path`), so that it never reads
as a path elsewhere, and nothing below it is walked (a restore skips it whole).
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator

from shadowvault.archive.metadata import type_bits
from shadowvault.archive.tree_paths import TreeReader, find_node, join
from shadowvault.display import display_name, escape_text, exact_fields, one_component
from shadowvault.repo.tree import Node, invalid_name, names_are_safe

JsonValue = str | int | list[str] | None  # what `describe` puts in a node's JSON line


def walk_tree(store: TreeReader, tree_id: bytes | None, prefix: bytes) -> Iterator[tuple[bytes, Node]]:
    """(path, node) of everything below the tree, depth-first, each directory before its contents."""
    for _listing, path, node in walk_tree_listings(store, tree_id, prefix):
        yield path, node


def walk_tree_listings(
    store: TreeReader, tree_id: bytes | None, prefix: bytes
) -> Iterator[tuple[bytes, bytes, Node]]:
    """(id of the tree listing it, path, node) of everything below the tree, as walk_tree orders them.
    One iterator per open directory on a list, not one generator inside another: a crafted tree
    20,000 directories deep ended `ls`, `find`, `stats` and `dump` in a RecursionError."""
    if not tree_id:
        return
    open_dirs = [(tree_id, _children(store, tree_id, prefix))]
    while open_dirs:
        listing, entries = open_dirs[-1]
        for path, node in entries:
            yield listing, path, node
            if node.type == "dir" and node.subtree and invalid_name(node.name) is None:
                open_dirs.append((node.subtree, _children(store, node.subtree, path)))
                break
        else:
            open_dirs.pop()


def _children(store: TreeReader, tree_id: bytes, prefix: bytes) -> Iterator[tuple[bytes, Node]]:
    nodes = store.load_tree(tree_id).nodes
    if names_are_safe([node.name for node in nodes]):  # the usual case, judged without a call per name
        for node in nodes:
            yield join(prefix, node.name), node
        return
    for node in nodes:
        yield entry_path(prefix, node.name), node


def entry_path(prefix: bytes, name: bytes) -> bytes:
    """The listed path of `name` in directory `prefix`: an unsafe name with its `/`, NUL and the dots
    of `.` or `..` as \\xNN, so that it is one component and never reads as a path."""
    if invalid_name(name) is None:
        return join(prefix, name)
    return join(prefix, one_component(name))


def list_snapshot(
    store: TreeReader, root_tree: bytes, path: str = "/", *, recursive: bool = True
) -> Iterator[tuple[bytes, Node]]:
    """Entries at and below `path` in the snapshot (a file path yields just that file)."""
    node = find_node(store, root_tree, path)
    raw = path.encode("utf-8", errors="surrogateescape")
    prefix = b"/" + b"/".join(p for p in raw.split(b"/") if p)
    if node is None:
        tree_id: bytes | None = root_tree
        prefix = b"/"
    elif node.type != "dir":
        yield prefix, node
        return
    else:
        yield prefix, node
        tree_id = node.subtree
    if recursive:
        yield from walk_tree(store, tree_id, prefix)
    elif tree_id:
        yield from _children(store, tree_id, prefix)


def display(raw: bytes) -> str:
    """A path for a terminal: control characters and invalid UTF-8 escaped (shadowvault.display)."""
    return display_name(raw)


def path_fields(raw: bytes) -> dict[str, str]:
    """A path for JSON: exact text, plus `path_bytes` (base64) when it is not UTF-8."""
    return exact_fields("path", raw)


def mode_string(node: Node) -> str:
    """`ls -l` style permissions, e.g. drwxr-xr-x."""
    try:
        bits = type_bits(node.type)
    except KeyError:
        bits = 0
    return stat.filemode(bits | node.mode)


def long_line(path: bytes, node: Node) -> str:
    """`ls -l`'s line for an entry (`ls -l`, `find -l`): mode, owner/group, size, time, path and where
    a link points; owner names come from the repository, so they are escaped like paths."""
    owner = escape_text(f"{node.user or node.uid}/{node.group or node.gid}")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(node.mtime_ns / 1e9))
    target = f" -> {display(node.link_target)}" if node.link_target is not None else ""
    return f"{mode_string(node)} {owner:>17} {node.size:>12} {when} {display(path)}{target}"


def describe(path: bytes, node: Node) -> dict[str, JsonValue]:
    """A node as plain JSON values; names exact (see docs/archive.md, "Names")."""
    info: dict[str, JsonValue] = {
        **path_fields(path),
        **exact_fields("name", node.name),
        "type": node.type,
        "mode": node.mode,
        "permissions": mode_string(node),
        "uid": node.uid,
        "gid": node.gid,
        "user": node.user,
        "group": node.group,
        "size": node.size,
        "mtime_ns": node.mtime_ns,
        "inode": node.inode,
        "nlink": node.nlink,
    }
    if (why := invalid_name(node.name)) is not None:
        info["unsafe_name"] = why  # a crafted tree: a restore skips the entry
    if node.link_target is not None:
        info.update(exact_fields("link_target", node.link_target))
    if node.rdev is not None:
        info["rdev"] = node.rdev
    if node.xattrs:
        info["xattrs"] = sorted(node.xattrs)
    if node.error:
        info["error"] = node.error
    return info
