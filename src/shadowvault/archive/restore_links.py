"""Which entries of a snapshot a restore lays down as one inode (hard links), and which it must not.

A backup records every entry's inode and link count, and the device of each hard-linked one, so
names of one inode share them: regular files, and also symlinks, FIFOs, sockets and device nodes
that were hard-linked. A restore links a later name to the first one it restored of that inode.
A tree comes from whoever holds the password, though: a crafted one can give a symlink and a file,
or two files of different content, one inode. Linking those would lay down what the tree does not
say (a symlink out of the target where it says "file", a FIFO where it says "file"), and nothing
after the restore would notice. So a later name is linked only when it is what the first one is:
same type, and for a file the same content and size, for a symlink the same target, for a device
node the same device number. Any other is restored on its own, with a warning.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from shadowvault.archive.restore_outcomes import Pending
from shadowvault.display import display_name
from shadowvault.repo.tree import Node

LinkKey = tuple[int, int]  # (device, inode) as the backup recorded them

_TYPE_BITS = {
    "file": stat.S_IFREG,
    "symlink": stat.S_IFLNK,
    "fifo": stat.S_IFIFO,
    "socket": stat.S_IFSOCK,
    "chardev": stat.S_IFCHR,
    "blockdev": stat.S_IFBLK,
}


@dataclass
class LinkGroup:
    """The first name of an inode this restore met: what its later names must match to be linked."""

    node: Node
    spath: bytes
    pending: Pending


def link_key(node: Node) -> LinkKey | None:
    """The inode a hard-linked entry shares with other names; None for an entry laid down on its own."""
    if node.type == "dir" or node.nlink <= 1 or node.inode == 0:
        return None
    return (node.device, node.inode)


def differs(first: Node, later: Node) -> str | None:
    """How `later` is not what `first` is (None: it is, and linking it lays down what its tree says)."""
    if first.type != later.type:
        return f"that is a {first.type}, this a {later.type}"
    if later.type == "file" and (first.content != later.content or first.size != later.size):
        return "their content differs"
    if later.type == "symlink" and first.link_target != later.link_target:
        return "their targets differ"
    if later.type in ("chardev", "blockdev") and first.rdev != later.rdev:
        return "their device numbers differ"
    return None


def mismatch_warning(group: LinkGroup, why: str) -> str:
    """The one line a restore says of a name it lays down on its own instead of linking it."""
    return (
        f"restored on its own, not hard-linked to the snapshot's {display_name(group.spath)}, whose"
        f" inode its snapshot gives it: {why}"
    )


def is_of_type(st: os.stat_result, node: Node) -> bool:
    """Whether what a link made is the kind of entry the tree says (the first name in the target is
    not necessarily what this restore made there)."""
    return stat.S_IFMT(st.st_mode) == _TYPE_BITS.get(node.type)
