"""What `stat` shows in the view: a snapshot's entries as stored, the top levels as read-only directories.

Owners are the stored numeric ids (restore maps them by name; the view shows what was there).
Inode numbers are stable and unique in the view: a hash of the snapshot and the source's device and
inode, so the hard links of one snapshot share an inode number as they did (a `tar` or `du` of the
view sees them as links), and different snapshots never share one.
"""

from __future__ import annotations

import hashlib
import stat
from typing import Any

from shadowvault.archive.metadata import type_bits
from shadowvault.repo.tree import Node

BLOCK = 512
VIRTUAL_DIR_MODE = stat.S_IFDIR | 0o555
VIRTUAL_LINK_MODE = stat.S_IFLNK | 0o777

Stat = dict[str, Any]


def inode_number(*parts: bytes | str | int) -> int:
    """A 63-bit inode number for the parts (never 0, which means "none")."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 1) or 1


def node_inode(snapshot_id: str, path: bytes, node: Node) -> int:
    """The inode number of a snapshot's entry: its source inode when it had one, else its path."""
    if node.inode and node.type != "dir":
        return inode_number(snapshot_id, node.device, node.inode)
    return inode_number(snapshot_id, path)


def node_stat(node: Node, ino: int) -> Stat:
    """The stat of a stored entry (times in nanoseconds: the view sets `use_ns`)."""
    try:
        kind = type_bits(node.type)
    except KeyError:  # a type this version does not know: shown as an empty file
        kind = stat.S_IFREG
    if node.type == "symlink":
        size = len(node.link_target or b"")
    elif node.type == "file":
        size = node.size
    else:
        size = 0
    return {
        "st_mode": kind | stat.S_IMODE(node.mode),
        "st_ino": ino,
        "st_nlink": 1 if node.type == "dir" else max(1, node.nlink),
        "st_uid": node.uid,
        "st_gid": node.gid,
        "st_size": size,
        "st_blocks": (size + BLOCK - 1) // BLOCK,
        "st_rdev": node.rdev or 0,
        "st_atime": node.atime_ns,
        "st_mtime": node.mtime_ns,
        "st_ctime": node.ctime_ns,
    }


def virtual_stat(mode: int, ino: int, when: float, uid: int, gid: int, size: int = 0) -> Stat:
    """The stat of a directory or link of the view's top levels (owned by whoever mounted it)."""
    ns = int(when * 1e9)
    return {
        "st_mode": mode,
        "st_ino": ino,
        "st_nlink": 1,
        "st_uid": uid,
        "st_gid": gid,
        "st_size": size,
        "st_atime": ns,
        "st_mtime": ns,
        "st_ctime": ns,
    }
