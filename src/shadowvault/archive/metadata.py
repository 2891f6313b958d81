"""POSIX metadata: capture it into a Node at backup time, put it back at restore time.

What is kept: type, permission bits (setuid/setgid/sticky included), owner as ids and names, ns
times, extended attributes in every namespace the kernel shows us (user, trusted, security, and
POSIX ACLs as their `system.posix_acl_*` xattrs), device numbers, symlink targets, link counts.

Owners are restored by name when the name exists on this machine (else by id), and so are the users
and groups that ACL entries name (their names are kept in `Node.acl_users`/`acl_groups`).

XFS shows root `trusted.SGI_ACL_FILE`/`trusted.SGI_ACL_DEFAULT` next to `system.posix_acl_*`: they are
the on-disk form of the same ACL, so they are never stored (restoring both would be wrong).
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import stat
import struct
from functools import lru_cache

from shadowvault.archive.entry_stat import EntryStat
from shadowvault.repo.tree import Node

log = logging.getLogger(__name__)

SKIPPED_XATTRS = frozenset({"trusted.SGI_ACL_FILE", "trusted.SGI_ACL_DEFAULT"})
ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")

# the xattr form of a POSIX ACL: a version word, then (tag, permissions, id) entries
_ACL_HEADER = struct.Struct("<I")
_ACL_ENTRY = struct.Struct("<HHI")
_ACL_VERSION = 2
ACL_USER, ACL_GROUP = 0x02, 0x08

_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFBLK: "blockdev",
    stat.S_IFCHR: "chardev",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}
_MODES = {name: bits for bits, name in _TYPES.items()}

# errors that mean "this filesystem or object has no xattrs", not "something is wrong"
_NO_XATTR = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA, errno.EPERM}


def node_type(st_mode: int) -> str:
    """The Node.type name of a stat mode."""
    return _TYPES.get(stat.S_IFMT(st_mode), "unknown")


def type_bits(node_type_name: str) -> int:
    """The S_IF* bits for a Node.type name."""
    return _MODES[node_type_name]


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@lru_cache(maxsize=4096)
def group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


@lru_cache(maxsize=4096)
def uid_of(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except (KeyError, ValueError):  # ValueError: a name with a NUL (a crafted tree), which no one has
        return None


@lru_cache(maxsize=4096)
def gid_of(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except (KeyError, ValueError):  # ValueError: a name with a NUL (a crafted tree), which no one has
        return None


def read_xattrs(path: bytes, *, follow: bool = False) -> dict[str, bytes]:
    """Every extended attribute of `path` (not following a symlink), minus the XFS ACL duplicates."""
    try:
        names = os.listxattr(path, follow_symlinks=follow)
    except OSError as err:
        if err.errno in _NO_XATTR:
            return {}
        raise
    if not names:  # most files: nothing to read
        return {}
    found: dict[str, bytes] = {}
    for name in sorted(names):
        if name in SKIPPED_XATTRS:
            continue
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            log.warning("%r: skipping xattr with an undecodable name", path)
            continue
        try:
            found[name] = os.getxattr(path, name, follow_symlinks=follow)
        except OSError as err:
            if err.errno in _NO_XATTR:
                continue
            raise
    return found


def recorded_device(st: EntryStat, kind: str) -> int:
    """The device number a node records: st_dev for a hard-linked entry that is no directory (a
    restore groups its names by device and inode), 0 for every other. A btrfs or LVM snapshot
    shows its files under an st_dev of its own, another at each backup whenever two snapshots
    overlap: recorded for every entry, it made each directory's tree new (stored again, and every
    `diff` descending into it) although nothing in it had changed (restic's issue 3041; its alpha
    feature device-id-for-hardlinks records it as here)."""
    return st.st_dev if st.st_nlink > 1 and kind != "dir" else 0


def capture(
    path: bytes, st: EntryStat, name: bytes, same_inode: Node | None = None, *, with_atime: bool = False
) -> Node:
    """A Node describing `path` (already lstat'ed as `st`), without file content or subtree.

    The access time is the modification time unless `with_atime` (restic's rule: every read moves
    an atime, and a tree recording them would differ, and be stored again, at every backup).

    `same_inode` is this path's node in the parent snapshot when it names the same inode with the
    same ctime: when it has the same type too, its extended attributes (ACLs among them) are still
    the file's, since setting or removing one moves the ctime, and are taken from it instead of
    read again (a no-change backup of 100k files spent 8 % of its time in listxattr)."""
    kind = node_type(st.st_mode)
    node = Node(
        name=name,
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        user=user_name(st.st_uid),
        group=group_name(st.st_gid),
        mtime_ns=st.st_mtime_ns,
        atime_ns=st.st_atime_ns if with_atime else st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
        device=recorded_device(st, kind),
        nlink=st.st_nlink,
        size=st.st_size if kind in ("file", "symlink") else 0,
    )
    if kind == "symlink":
        node.link_target = os.readlink(path)
    elif kind in ("blockdev", "chardev"):
        node.rdev = st.st_rdev
    elif kind == "file":
        node.sparse = st.st_blocks * 512 < st.st_size
    if same_inode is not None and same_inode.type == kind:
        node.xattrs = dict(same_inode.xattrs)
    else:
        node.xattrs = read_xattrs(path)
    if node.xattrs and not node.xattrs.keys().isdisjoint(ACL_XATTRS):
        node.acl_users, node.acl_groups = acl_names(node.xattrs)
    return node


def _acl_entries(value: bytes) -> list[tuple[int, int, int]] | None:
    """The (tag, perm, id) entries of an ACL xattr; None if it is not in the format we know."""
    if len(value) < 4 or (len(value) - 4) % 8 or _ACL_HEADER.unpack_from(value)[0] != _ACL_VERSION:
        return None
    return [_ACL_ENTRY.unpack_from(value, offset) for offset in range(4, len(value), 8)]


def acl_names(xattrs: dict[str, bytes]) -> tuple[dict[int, str], dict[int, str]]:
    """Names of the users and groups that the ACLs name (ids without a name here are left out)."""
    users: dict[int, str] = {}
    groups: dict[int, str] = {}
    for name in ACL_XATTRS:
        for tag, _perm, ident in _acl_entries(xattrs.get(name, b"")) or []:
            if tag == ACL_USER and (user := user_name(ident)) is not None:
                users[ident] = user
            elif tag == ACL_GROUP and (group := group_name(ident)) is not None:
                groups[ident] = group
    return users, groups


def map_acl(value: bytes, node: Node) -> bytes:
    """The ACL with its named users and groups given their ids on this machine (by name)."""
    entries = _acl_entries(value)
    if entries is None or not (node.acl_users or node.acl_groups):
        return value
    out = [_ACL_HEADER.pack(_ACL_VERSION)]
    for tag, perm, ident in entries:
        if tag == ACL_USER and ident in node.acl_users:
            local = uid_of(node.acl_users[ident])
            ident = local if local is not None else ident
        elif tag == ACL_GROUP and ident in node.acl_groups:
            local = gid_of(node.acl_groups[ident])
            ident = local if local is not None else ident
        out.append(_ACL_ENTRY.pack(tag, perm, ident))
    return b"".join(out)


def resolve_owner(node: Node, *, numeric_owner: bool) -> tuple[int, int]:
    """The uid/gid to give a restored entry: by name when the name exists here, else the stored ids."""
    uid, gid = node.uid, node.gid
    if not numeric_owner:
        if node.user is not None:
            mapped = uid_of(node.user)
            uid = mapped if mapped is not None else uid
        if node.group is not None:
            mapped = gid_of(node.group)
            gid = mapped if mapped is not None else gid
    return uid, gid


def apply(
    path: bytes,
    node: Node,
    *,
    numeric_owner: bool = False,
    fd: int | None = None,
    clear_inherited_acl: bool = True,
) -> None:
    """Give `path` (or open `fd` of it) the metadata of `node`.

    Resolves `path` by name: for trusted paths only. A restore into a target that others may have
    prepared uses `apply_fd` and `apply_at`, which never follow a symlink.
    """
    if fd is not None:
        _apply(fd, node, numeric_owner, clear_inherited_acl, label=path)
    else:
        _apply(path, node, numeric_owner, clear_inherited_acl, label=path, follow=node.type != "symlink")


def apply_fd(
    fd: int, node: Node, *, numeric_owner: bool = False, clear_inherited_acl: bool = True, label: bytes = b""
) -> None:
    """Give the open file or directory `fd` the metadata of `node`: no name is resolved at all."""
    _apply(fd, node, numeric_owner, clear_inherited_acl, label=label)


def apply_at(
    dir_fd: int,
    name: bytes,
    node: Node,
    *,
    numeric_owner: bool = False,
    clear_inherited_acl: bool = True,
    label: bytes = b"",
) -> None:
    """Give entry `name` of the directory `dir_fd` the metadata of `node`, never following a symlink.

    For what cannot be opened for writing without side effects (symlinks, fifos, devices, sockets).
    A symlink is changed through the *at calls with AT_SYMLINK_NOFOLLOW; anything else is pinned with
    an O_PATH descriptor first, checked to be of the node's type, and changed through /proc/self/fd
    (which names that very inode, so a symlink swapped in meanwhile is never followed).
    """
    if node.type == "symlink":
        uid, gid = resolve_owner(node, numeric_owner=numeric_owner)
        if _may_chown(uid):
            try:
                os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
            except PermissionError:
                log.warning("%r: cannot change owner to %d:%d", label or name, uid, gid)
        os.utime(name, ns=(node.atime_ns, node.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
        return
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if stat.S_IFMT(os.fstat(fd).st_mode) != type_bits(node.type):
            raise OSError(errno.ELOOP, "replaced by something else while being restored")
        pinned = b"/proc/self/fd/%d" % fd
        _apply(pinned, node, numeric_owner, clear_inherited_acl, label=label or name, follow=True)
    finally:
        os.close(fd)


def _may_chown(uid: int) -> bool:
    return os.geteuid() == 0 or uid == os.geteuid()


def _apply(
    target: int | bytes,
    node: Node,
    numeric_owner: bool,
    clear_inherited_acl: bool,
    *,
    label: bytes,
    follow: bool = True,
) -> None:
    """Owner, xattrs and ACLs, mode, times of `target` (an fd, or a path resolved with `follow`).

    Order matters: chown first (it clears setuid bits and file capabilities), then xattrs and ACLs,
    then the mode (chmod after the ACL keeps the ACL mask equal to the stored group bits), times last.
    """
    is_link = node.type == "symlink"
    uid, gid = resolve_owner(node, numeric_owner=numeric_owner)
    if _may_chown(uid):
        try:
            if isinstance(target, int):
                os.chown(target, uid, gid)
            else:
                os.chown(target, uid, gid, follow_symlinks=follow)
        except PermissionError:
            log.warning("%r: cannot change owner to %d:%d", label, uid, gid)
    if not is_link:
        _apply_xattrs(target, node, clear_inherited_acl or node.type == "dir", numeric_owner)
        os.chmod(target, node.mode)
    times = (node.atime_ns, node.mtime_ns)
    if isinstance(target, int):
        os.utime(target, ns=times)
    else:
        os.utime(target, ns=times, follow_symlinks=follow)


def _apply_xattrs(target: int | bytes, node: Node, clear_inherited_acl: bool, numeric_owner: bool) -> None:
    present: set[str] = set()
    if clear_inherited_acl:
        try:
            present = set(os.listxattr(target))
        except OSError as err:
            if err.errno not in _NO_XATTR:
                raise
    for name in ACL_XATTRS:
        # a default ACL of the directory we restore into may have been inherited: drop it
        if name in present and name not in node.xattrs:
            os.removexattr(target, name)
    for name, value in node.xattrs.items():
        if "\0" in name:  # no filesystem has such a name: a crafted snapshot's
            log.warning("an xattr name holding a NUL byte (%r) skipped", name)
            continue
        if name in ACL_XATTRS and not numeric_owner:
            value = map_acl(value, node)
        try:
            os.setxattr(target, name, value)
        except OSError as err:
            if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                log.warning("xattr %s not supported on the target filesystem; skipped", name)
                continue
            raise


def same_content_metadata(
    old: Node, st: EntryStat, *, ignore_inode: bool = False, ignore_ctime: bool = False
) -> bool:
    """The incremental test: inode, size, mtime and ctime equal means the content was not changed
    (without the inode or the ctime, `ignore_*`, where a filesystem does not keep them stable).

    The device is deliberately not compared: a btrfs snapshot keeps inode numbers but has its own st_dev.
    """
    return (
        old.type == "file"
        and old.error is None
        and (ignore_inode or old.inode == st.st_ino)
        and old.size == st.st_size
        and old.mtime_ns == st.st_mtime_ns
        and (ignore_ctime or old.ctime_ns == st.st_ctime_ns)
    )
