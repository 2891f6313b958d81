"""Trees and nodes: how a directory hierarchy is stored as TREE blobs (one blob per directory).

The repository engine reads `Node.content` and `Node.subtree` to know which blobs a snapshot
references (check, prune); the archive layer fills every other field. See docs/repository.md.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

BlobId = bytes  # 32-byte keyed BLAKE3 of the plaintext

# What stat can give, checked when a tree is decoded: a tree comes from whoever holds the password,
# and a value out of these ranges reached chmod, chown, mknod, `ls --long` or a tar header as an
# OverflowError (a crafted tree with such an entry is a damaged tree, as one that does not decode).
# Sizes and times are left as given: no call they reach overflows on a crafted one.
Mode = Annotated[int, msgspec.Meta(ge=0, le=0o7777)]
OwnerId = Annotated[int, msgspec.Meta(ge=0, le=(1 << 32) - 2)]  # (uid_t)-1 means "unchanged" to chown
DeviceNumber = Annotated[int, msgspec.Meta(ge=0)]  # up to 2^64 - 1, the most msgpack holds


class Node(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One directory entry with everything needed to lay it back down."""

    name: bytes  # the raw file name (file names are bytes on Linux, not necessarily UTF-8)
    type: str  # file | dir | symlink | blockdev | chardev | fifo | socket
    mode: Mode = 0  # permission bits, including setuid/setgid/sticky (S_IMODE)
    uid: OwnerId = 0
    gid: OwnerId = 0
    user: str | None = None  # names, so a restore can map owners by name
    group: str | None = None
    mtime_ns: int = 0
    atime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    # st_dev of a hard-linked entry that is no directory (a restore groups names by device and
    # inode); 0 for any other (a snapshot's st_dev changes between backups: archive/metadata.py)
    device: int = 0
    nlink: int = 1
    size: int = 0
    content: list[BlobId] = []  # DATA blobs, in order (files)
    subtree: BlobId | None = None  # the TREE blob of a directory
    link_target: bytes | None = None  # symlinks
    rdev: DeviceNumber | None = None  # device nodes
    xattrs: dict[str, bytes] = {}  # extended attributes, POSIX ACLs (system.posix_acl_*) included
    sparse: bool = False  # the file had holes; restore leaves zero runs as holes
    error: str | None = None  # why the entry could not be read (it is stored without content)
    # the live original's inode and ctime when the file was read from a copy (a reflink shadow): a
    # copy has inodes and ctimes of its own, so the next backup matches against the original's
    orig_inode: int = 0
    orig_ctime_ns: int = 0
    # names of the users and groups named in the POSIX ACLs (id -> name), so a restore can map them
    acl_users: dict[int, str] = {}
    acl_groups: dict[int, str] = {}

    @property
    def display_name(self) -> str:
        return self.name.decode("utf-8", errors="surrogateescape")


class Tree(msgspec.Struct, kw_only=True):
    """A directory's entries, sorted by name."""

    nodes: list[Node] = []


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Tree)


LOST_TO_DAMAGE = "lost to repository damage"  # in the error `repair snapshots` gives an entry it lost


def entry_error(error: str) -> str:
    """What an entry's recorded error means: not read at backup, or (a `repair snapshots` copy)
    read at backup and lost later to damage in the repository."""
    return error if LOST_TO_DAMAGE in error else f"not read at backup: {error}"


def invalid_name(name: bytes) -> str | None:
    """Why `name` cannot be a directory entry (None when it can).

    A tree comes from whoever holds the repository password; a restore joins these names below its
    target, so anything that is not exactly one path component would let it write elsewhere.
    """
    if not name:
        return "empty name"
    if name in (b".", b".."):
        return f"{name.decode()!r} is not a file name"
    if b"/" in name:
        return "the name contains '/'"
    if b"\0" in name:
        return "the name contains a NUL byte"
    return None


_UNSAFE_NAMES = frozenset((b"", b".", b".."))


def names_are_safe(names: list[bytes]) -> bool:
    """True when every name passes `invalid_name` and none repeats (False: look at each)."""
    joined = b"\0".join(names)
    return (
        b"/" not in joined
        and joined.count(b"\0") == len(names) - 1
        and len(set(names)) == len(names)
        and _UNSAFE_NAMES.isdisjoint(names)
    )


def duplicate_names(nodes: list[Node]) -> set[bytes]:
    """Names that appear more than once in one directory (a real directory never has any)."""
    seen: set[bytes] = set()
    duplicates: set[bytes] = set()
    for node in nodes:
        (duplicates if node.name in seen else seen).add(node.name)
    return duplicates


def encode_tree(tree: Tree) -> bytes:
    return _encoder.encode(tree)


def decode_tree(data: bytes) -> Tree:
    return _decoder.decode(data)
