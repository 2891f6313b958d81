"""`dump`: one file of a snapshot as its bytes, or a subtree as a tar (or zip) stream.

Members are named by their snapshot paths without the leading `/` (as restic and GNU tar name
absolute paths), with modes, owners (ids and names), nanosecond mtimes (pax), symlinks, hard links,
device nodes, fifos and xattrs (pax SCHILY.xattr, what `tar --xattrs` reads).

A tree is untrusted: a name that is not exactly one path component (`..`, `a/b`, empty, NUL) or that
appears twice in one directory is left out and reported, so a member name can never climb out of the
directory it is extracted into, nor pass through a symlink member. Sockets have no tar form: they
are named apart (they hold no data; a program makes them anew when it starts). A blob that cannot
be read stops the stream with an error: a tar with a file of wrong bytes would look whole.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from shadowvault.archive.file_content import ContentSource, content_pieces
from shadowvault.archive.restore_links import differs
from shadowvault.archive.tree_paths import TreeReader, find_node, join, raw_path, text
from shadowvault.errors import IntegrityError, UsageError
from shadowvault.repo.tree import Node, duplicate_names, entry_error, invalid_name

ARCHIVE_FORMATS = ("tar", "zip")
_TAR_TYPES = {
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}
_ZIP_TYPES = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}
COPY_SIZE = 1 << 20


class BlobSource(TreeReader, ContentSource, Protocol):
    """Trees, and file content with its holes served as zeros (archive/file_content.py)."""


@dataclass
class DumpResult:
    """What the stream holds, what it left out (path, why), and the sockets it could not hold."""

    members: int = 0
    bytes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)


def file_chunks(store: BlobSource, node: Node, path: bytes) -> Iterator[bytes | memoryview]:
    """A file's content, blob by blob (holes as zeros, never loaded); IntegrityError when it is not
    the size the snapshot says."""
    if node.error is not None:
        raise IntegrityError(f"{text(path)}: {entry_error(node.error)}")
    total = 0
    for data in content_pieces(store, node.content):
        total += len(data)
        yield data
    if total != node.size:
        raise IntegrityError(f"{text(path)}: the snapshot holds {total} bytes, its size says {node.size}")


def find_entry(store: TreeReader, root_tree: bytes, path: str) -> tuple[bytes, Node | None]:
    """The snapshot path (normalized) and its node (None for the root); NotFoundError when absent."""
    node = find_node(store, root_tree, path)
    parts = [p for p in raw_path(path).split(b"/") if p]
    return b"/" + b"/".join(parts), node


def write_file(store: BlobSource, node: Node, path: bytes, out: BinaryIO) -> int:
    """Copy one regular file's content to `out`; returns the bytes written."""
    if node.type != "file":
        raise UsageError(f"{text(path)} is a {node.type}, not a file")
    written = 0
    for data in file_chunks(store, node, path):
        out.write(data)
        written += len(data)
    return written


class _Walk:
    """The entries below a node, depth first, each directory before its contents; unsafe names left out."""

    def __init__(self, store: BlobSource, result: DumpResult) -> None:
        self.store = store
        self.result = result

    def entries(self, path: bytes, node: Node | None, root_tree: bytes) -> Iterator[tuple[bytes, Node]]:
        if node is not None:
            yield path, node
            if node.type != "dir":
                return
            tree_id = node.subtree
        else:
            tree_id = root_tree
        if tree_id:
            yield from self._below(path, tree_id)

    def _below(self, path: bytes, tree_id: bytes) -> Iterator[tuple[bytes, Node]]:
        """One iterator per open directory on a list (as listing.walk_tree): a crafted tree 20,000
        directories deep ended `dump` in a RecursionError."""
        open_dirs = [self._children(path, tree_id)]
        while open_dirs:
            for child_path, child in open_dirs[-1]:
                yield child_path, child
                if child.type == "dir" and child.subtree:
                    open_dirs.append(self._children(child_path, child.subtree))
                    break
            else:
                open_dirs.pop()

    def _children(self, path: bytes, tree_id: bytes) -> Iterator[tuple[bytes, Node]]:
        nodes = self.store.load_tree(tree_id).nodes
        twice = duplicate_names(nodes)
        for child in nodes:
            child_path = join(path, child.name)
            why = invalid_name(child.name) or ("the name appears twice" if child.name in twice else None)
            if why is not None:
                self.result.skipped.append((text(child_path), f"left out: {why}"))
                continue
            yield child_path, child


def _member_name(path: bytes) -> str:
    return path.lstrip(b"/").decode("utf-8", "surrogateescape") or "."


class _ZipMember(zipfile.ZipInfo):
    """A zip member whose name may be any bytes: zipfile writes names as UTF-8 and fails on one that
    is not ("internal error: UnicodeEncodeError"). Such a name is written as its bytes without the
    UTF-8 flag, as restic's zip and Info-ZIP do (an unpacker then takes the bytes as they are)."""

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:
        try:
            return super()._encodeFilenameFlags()  # type: ignore[misc]
        except UnicodeEncodeError:
            return self.filename.encode("utf-8", "surrogateescape"), self.flag_bits & ~_ZIP_UTF8_NAME


_ZIP_UTF8_NAME = 0x800  # general purpose flag bit 11: the name is UTF-8


def _tar_info(path: bytes, node: Node) -> tarfile.TarInfo:
    info = tarfile.TarInfo(_member_name(path))
    info.mode = node.mode
    info.uid, info.gid = node.uid, node.gid
    info.uname, info.gname = node.user or "", node.group or ""
    seconds, nanos = divmod(node.mtime_ns, 1_000_000_000)
    info.mtime = seconds
    info.pax_headers = {"mtime": f"{seconds}.{nanos:09d}"} if nanos else {}
    for name, value in sorted(node.xattrs.items()):
        info.pax_headers[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
    if node.type == "file":
        info.type, info.size = tarfile.REGTYPE, node.size
    else:
        info.type = _TAR_TYPES[node.type]
    if node.link_target is not None:
        info.linkname = node.link_target.decode("utf-8", "surrogateescape")
    if node.rdev is not None:
        info.devmajor, info.devminor = os.major(node.rdev), os.minor(node.rdev)
    return info


class _ChunkStream(io.RawIOBase):
    """A file's chunks as a readable stream (what tarfile.addfile copies from)."""

    def __init__(self, chunks: Iterator[bytes | memoryview]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")  # a view: tar reads 16 KiB at a time, slicing bytes would copy

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        """Fill `buffer` whole unless the content ends (tarfile takes a short read for the end)."""
        filled = 0
        while filled < len(buffer):
            if not self._pending:
                try:
                    self._pending = memoryview(next(self._chunks))  # IntegrityError when short of its size
                except StopIteration:
                    break
                continue
            size = min(len(buffer) - filled, len(self._pending))
            buffer[filled : filled + size] = self._pending[:size]
            self._pending = self._pending[size:]
            filled += size
        return filled

    def finish(self) -> None:
        """Read what tar did not take: file_chunks then says the content outgrew the recorded size."""
        for _ in self._chunks:
            pass


def write_tar(store: BlobSource, root_tree: bytes, path: str, out: BinaryIO) -> DumpResult:
    """`path` of the snapshot and everything below it as a pax tar stream on `out`."""
    result = DumpResult()
    top, node = find_entry(store, root_tree, path)
    # (device, inode) of a multiply linked file -> its first member and entry; a later member is a
    # tar link only when it is what the first is (a crafted tree can give two contents one inode)
    links: dict[tuple[int, int], tuple[str, Node]] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for entry_path, entry in _Walk(store, result).entries(top, node, root_tree):
            if entry.type == "socket":
                result.sockets.append(text(entry_path))
                continue
            if entry.type not in (*_TAR_TYPES, "file"):
                result.skipped.append((text(entry_path), f"left out: a {entry.type} has no tar form"))
                continue
            if entry.type == "file" and entry.error is not None:
                result.skipped.append((text(entry_path), f"left out: {entry_error(entry.error)}"))
                continue
            info = _tar_info(entry_path, entry)
            key = (entry.device, entry.inode)
            first = links.get(key) if entry.type == "file" and entry.nlink > 1 and entry.inode else None
            if first is not None and differs(first[1], entry) is None:
                info.type, info.size, info.linkname = tarfile.LNKTYPE, 0, first[0]
                tar.addfile(info)
            elif entry.type == "file":
                if entry.nlink > 1 and entry.inode and first is None:
                    links[key] = (info.name, entry)
                stream = _ChunkStream(file_chunks(store, entry, entry_path))
                tar.addfile(info, stream)
                stream.finish()
                result.bytes += entry.size
            else:
                tar.addfile(info)
            result.members += 1
    return result


def write_zip(store: BlobSource, root_tree: bytes, path: str, out: BinaryIO) -> DumpResult:
    """`path` and everything below it as a zip stream (modes and mtimes; zip has no owners or devices)."""
    result = DumpResult()
    top, node = find_entry(store, root_tree, path)
    with zipfile.ZipFile(out, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:
        for entry_path, entry in _Walk(store, result).entries(top, node, root_tree):
            if entry.type == "socket":
                result.sockets.append(text(entry_path))
                continue
            if entry.type not in _ZIP_TYPES or (entry.type == "file" and entry.error is not None):
                result.skipped.append((text(entry_path), f"left out: a {entry.type} has no zip form"))
                continue
            name = _member_name(entry_path) + ("/" if entry.type == "dir" else "")
            when = time.localtime(max(entry.mtime_ns // 1_000_000_000, 315_532_800))[:6]  # zip starts in 1980
            info = _ZipMember(name, date_time=when)
            info.external_attr = (_ZIP_TYPES[entry.type] | entry.mode) << 16
            if entry.type == "file":
                info.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(info, "w", force_zip64=entry.size > (1 << 31)) as member:
                    for data in file_chunks(store, entry, entry_path):
                        member.write(data)
                result.bytes += entry.size
            else:
                target = entry.link_target or b""
                archive.writestr(info, target)
            result.members += 1
    return result


WRITERS: dict[str, Callable[[BlobSource, bytes, str, BinaryIO], DumpResult]] = {
    "tar": write_tar,
    "zip": write_zip,
}
