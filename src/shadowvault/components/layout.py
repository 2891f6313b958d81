"""Laying entries down inside a target root without ever leaving it.

A target root is someone else's tree: its symlinks (`/etc/mtab -> /proc/self/mounts`, an absolute
`/home -> /srv/home`) mean the target root's paths, not this machine's. `resolve_in_root` resolves
a path the way a chroot would, so a restore into DIR can never write outside DIR. The final
component is never followed: replacing a symlink replaces the link itself.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import struct
from pathlib import Path, PurePosixPath

from shadowvault.components.accounts import IdMap
from shadowvault.components.base import Entry
from shadowvault.errors import UsageError

log = logging.getLogger(__name__)

_MAX_LINKS = 40


def resolve_in_root(root: Path, rel: str) -> Path:
    """`rel` (absolute or relative, "/"-separated) inside `root`, parents' symlinks resolved inside root."""
    parts = [p for p in PurePosixPath("/" + rel.lstrip("/")).parts[1:] if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    pending = list(parts)
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        if not pending:  # the last component: never followed
            resolved.append(part)
            break
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > _MAX_LINKS:
                raise UsageError(f"too many symbolic links resolving {rel} in {root}")
            target = os.readlink(candidate)
            link_parts = [p for p in PurePosixPath(target).parts if p not in ("", ".")]
            if target.startswith("/"):
                resolved = []
                link_parts = link_parts[1:]
            pending = link_parts + pending
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def ensure_parent(root: Path, path: Path) -> None:
    """Create missing parents of `path` (inside `root`) as root-owned 0755 directories."""
    parent = path.parent
    if parent.is_dir():
        return
    missing = []
    while not parent.is_dir() and parent != root:
        if parent.is_symlink() or parent.exists():
            raise UsageError(f"{parent} is in the way of a directory")
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o755)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


_ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
_ACL_USER, _ACL_GROUP = 0x02, 0x08


def map_acl(value: bytes, idmap: IdMap | None) -> bytes:
    """Rewrite the uid/gid qualifiers of a POSIX ACL xattr (version 2 format) through `idmap`.

    An ACL names users and groups by number; when an account gets a new uid on the target, its
    entries must follow it or the key becomes readable by whoever owns the old uid there.
    """
    if idmap is None or len(value) < 4 or (len(value) - 4) % 8:
        return value
    out = bytearray(value[:4])
    for offset in range(4, len(value), 8):
        tag, perm, ident = struct.unpack_from("<HHI", value, offset)
        if tag == _ACL_USER:
            ident = idmap.uid(ident)
        elif tag == _ACL_GROUP:
            ident = idmap.gid(ident)
        out += struct.pack("<HHI", tag, perm, ident)
    return bytes(out)


def _copy_xattrs(src: Path, dst: Path, idmap: IdMap | None = None) -> None:
    """Every xattr of `src` (ACLs included, as system.posix_acl_*), onto `dst`; symlinks untouched."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        if name in ("trusted.SGI_ACL_FILE", "trusted.SGI_ACL_DEFAULT"):
            continue
        value = os.getxattr(src, name, follow_symlinks=False)
        if name in _ACL_XATTRS:
            value = map_acl(value, idmap)
        try:
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError as err:
            log.warning("%s: could not set xattr %s: %s", dst, name, err.strerror)


def _remap_acls(path: Path, idmap: IdMap | None) -> None:
    """Rewrite the ACL xattrs already on `path` (a moved file) through `idmap`."""
    if idmap is None or (not idmap.uids and not idmap.gids):
        return
    for name in _ACL_XATTRS:
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        mapped = map_acl(value, idmap)
        if mapped != value:
            os.setxattr(path, name, mapped, follow_symlinks=False)


def _set_metadata(
    path: Path,
    entry: Entry,
    times: os.stat_result,
    uid: int,
    gid: int,
    xattrs_from: Path | None,
    idmap: IdMap | None,
) -> None:
    """Owner, xattrs/ACLs, mode, times, in the order that keeps each (chown clears setuid bits)."""
    if os.geteuid() == 0:
        os.chown(path, uid, gid, follow_symlinks=False)
    if entry.type == "symlink":
        os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns), follow_symlinks=False)
        return
    if xattrs_from is not None:
        _copy_xattrs(xattrs_from, path, idmap)
    else:
        _remap_acls(path, idmap)
    os.chmod(path, entry.mode)
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))


def _make_copy(content: Path, entry: Entry, path: Path) -> bool:
    if entry.type == "symlink":
        os.symlink(os.readlink(content), path)
    elif entry.type == "file":
        shutil.copyfile(content, path, follow_symlinks=False)
    elif entry.type == "fifo":
        os.mkfifo(path, 0o600)
    elif entry.type in ("blockdev", "chardev"):
        st = content.lstat()
        os.mknod(path, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev)
    else:
        return False
    return True


def lay_entry(
    root: Path,
    dest_rel: str,
    entry: Entry,
    content: Path,
    uid: int,
    gid: int,
    idmap: IdMap | None = None,
    *,
    move: bool = False,
) -> Path:
    """Put `entry` (bytes and metadata at `content`) at `dest_rel` inside `root`, owned by uid:gid.

    Directories that exist are kept (their metadata is updated). Anything else replaces what is
    there atomically: with `move` (content is a staging copy on the same filesystem) the staged inode
    is renamed into place, which keeps hard links, holes and xattrs and costs no copy; otherwise a
    copy is made under a temporary name, given its metadata, and renamed. Returns the path written.
    """
    dest = resolve_in_root(root, dest_rel)
    ensure_parent(root, dest)
    times = content.lstat()
    if entry.type == "dir":
        if (dest.exists() or dest.is_symlink()) and not (dest.is_dir() and not dest.is_symlink()):
            _remove(dest)
        if not dest.is_dir():
            dest.mkdir(mode=0o700)
        _set_metadata(dest, entry, times, uid, gid, content, idmap)
        return dest
    if entry.type not in ("file", "symlink", "fifo", "blockdev", "chardev"):
        log.info("%s: %s entries are not restored", dest, entry.type)
        return dest
    if dest.is_dir() and not dest.is_symlink():
        _remove(dest)  # a directory cannot be renamed over
    if move:
        try:
            os.rename(content, dest)
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise
        else:
            _set_metadata(dest, entry, times, uid, gid, None, idmap)
            return dest
    tmp = dest.with_name(f".{dest.name}.svtmp-{os.getpid()}")
    try:
        _make_copy(content, entry, tmp)
        _set_metadata(tmp, entry, times, uid, gid, content, idmap)
        os.replace(tmp, dest)
    except BaseException:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
        raise
    return dest


def restore_dir_times(root: Path, dest_rel: str, content: Path) -> None:
    """Directory mtimes change as entries are added: set them again once the directory is complete."""
    dest = resolve_in_root(root, dest_rel)
    st = content.lstat()
    if dest.is_dir() and not dest.is_symlink():
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))


def same_content(a: Path, b: Path) -> bool:
    """True when two regular files (or two symlinks) hold the same bytes."""
    if a.is_symlink() or b.is_symlink():
        return a.is_symlink() and b.is_symlink() and os.readlink(a) == os.readlink(b)
    if not (a.is_file() and b.is_file()) or a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            block_a, block_b = fa.read(1 << 20), fb.read(1 << 20)
            if block_a != block_b:
                return False
            if not block_a:
                return True
