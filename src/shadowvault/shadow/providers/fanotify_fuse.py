"""The read-only FUSE view of a fanotify shadow, spoken directly over /dev/fuse (no libfuse needed).

It serves the point-in-time index: names, metadata and extended attributes as they were, file data
from the copy-aside store or the pinned live file. Because the view is served by the listener
process, a dead listener makes every access fail (ENOTCONN) instead of showing live data, and a
shadow marked invalid answers EIO. Only the requests a read-only tree needs are answered; every
other one gets ENOSYS (writes cannot reach us: the mount is read-only).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct

from shadowvault.shadow.providers import fanotify_sys
from shadowvault.shadow.providers.fanotify_cow import CowStore, ShadowInvalidError
from shadowvault.shadow.providers.fanotify_index import ROOT_NODE, Entry, Index

log = logging.getLogger(__name__)

LOOKUP, FORGET, GETATTR, READLINK, OPEN, READ = 1, 2, 3, 5, 14, 15
STATFS, RELEASE, GETXATTR, LISTXATTR, FLUSH, INIT = 17, 18, 22, 23, 25, 26
OPENDIR, READDIR, RELEASEDIR, ACCESS, INTERRUPT, DESTROY, BATCH_FORGET = 27, 28, 29, 34, 36, 38, 42
_NO_REPLY = {FORGET, BATCH_FORGET, INTERRUPT}

FUSE_MAX_PAGES = 1 << 22
MAX_PAGES = 256  # 1 MiB reads
_IN_HEADER = struct.Struct("=IIQQIIIHH")
_OUT_HEADER = struct.Struct("=IiQ")
_INIT_IN = struct.Struct("=IIII")
_INIT_OUT = struct.Struct("=IIIIHHIIHHI7I")
_ATTR = struct.Struct("=QQQQQQIIIIIIIIII")
_ENTRY_OUT = struct.Struct("=QQQQII")
_ATTR_OUT = struct.Struct("=QII")
_OPEN_OUT = struct.Struct("=QIi")
_READ_IN = struct.Struct("=QQII")
_GETXATTR_IN = struct.Struct("=II")
_GETXATTR_OUT = struct.Struct("=II")
_DIRENT = struct.Struct("=QQII")
_STATFS = struct.Struct("=QQQQQIIII6I")
VALID = 3600  # seconds the kernel may cache names and attributes: the shadow never changes
BUFFER = (MAX_PAGES + 1) * 4096


def _attr(entry: Entry) -> bytes:
    st = entry.st
    return _ATTR.pack(
        st.st_ino,
        st.st_size,
        st.st_blocks,
        int(st.st_atime),
        int(st.st_mtime),
        int(st.st_ctime),
        st.st_atime_ns % 10**9,
        st.st_mtime_ns % 10**9,
        st.st_ctime_ns % 10**9,
        st.st_mode,
        st.st_nlink,
        st.st_uid,
        st.st_gid,
        st.st_rdev,
        st.st_blksize,
        0,
    )


class FuseView:
    """Serves `index` (with data from `store`) on a FUSE mount at `target` until it is unmounted."""

    def __init__(self, index: Index, store: CowStore, target: str) -> None:
        self.index = index
        self.store = store
        self.target = target
        self.fd = -1

    def mount(self) -> None:
        self.fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        options = f"fd={self.fd},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions"
        flags = fanotify_sys.MS_RDONLY | fanotify_sys.MS_NOSUID | fanotify_sys.MS_NODEV
        fanotify_sys.mount("shadowvault", self.target, "fuse.shadowvault", flags, options)

    def serve(self) -> None:
        """Answer requests until the mount goes away (ENODEV) or DESTROY."""
        while True:
            try:
                request = os.read(self.fd, BUFFER)
            except OSError as err:
                if err.errno in (errno.EINTR, errno.ENOENT, errno.EAGAIN):
                    continue  # ENOENT: the request was interrupted before we read it
                if err.errno == errno.ENODEV:
                    return
                raise
            length, opcode, unique, node, *_ = _IN_HEADER.unpack_from(request)
            body = request[_IN_HEADER.size : length]
            if opcode == DESTROY:
                return
            if opcode in _NO_REPLY:
                continue
            try:
                reply = self._answer(opcode, node, body)
                self._reply(unique, 0, reply)
            except ShadowInvalidError as err:
                log.error("read refused: %s", err)
                self._reply(unique, -errno.EIO)
            except OSError as err:
                self._reply(unique, -(err.errno or errno.EIO))

    def _reply(self, unique: int, error: int, payload: bytes = b"") -> None:
        if error:
            payload = b""
        try:
            os.write(self.fd, _OUT_HEADER.pack(_OUT_HEADER.size + len(payload), error, unique) + payload)
        except OSError as err:
            if err.errno != errno.ENOENT:  # ENOENT: the request was interrupted meanwhile
                raise

    def _entry(self, node: int) -> Entry:
        entry = self.index.entries.get(node)
        if entry is None:
            raise OSError(errno.ENOENT, "no such node")
        return entry

    def _answer(self, opcode: int, node: int, body: bytes) -> bytes:
        if opcode == INIT:
            _, _, readahead, _ = _INIT_IN.unpack_from(body)
            flags = FUSE_MAX_PAGES
            return _INIT_OUT.pack(7, 31, readahead, flags, 16, 12, 128 << 10, 1, MAX_PAGES, 0, 0, *[0] * 7)
        if self.store.invalid and opcode in (LOOKUP, OPEN, READ, OPENDIR, READDIR):
            raise ShadowInvalidError(self.store.invalid)
        if opcode == LOOKUP:
            parent = self._entry(node)
            child = parent.children.get(body.rstrip(b"\0"))
            if child is None:
                raise OSError(errno.ENOENT, "no such name")
            entry = self._entry(child)
            return _ENTRY_OUT.pack(child, 0, VALID, VALID, 0, 0) + _attr(entry)
        if opcode == GETATTR:
            return _ATTR_OUT.pack(VALID, 0, 0) + _attr(self._entry(node))
        if opcode == READLINK:
            return self._entry(node).target
        if opcode in (OPEN, OPENDIR):
            return _OPEN_OUT.pack(node, 0, 0)
        if opcode == READ:
            _, offset, size, _ = _READ_IN.unpack_from(body)
            return self.store.read(self._entry(node), offset, size)
        if opcode == READDIR:
            _, offset, size, _ = _READ_IN.unpack_from(body)
            return self._readdir(self._entry(node), offset, size)
        if opcode in (RELEASE, RELEASEDIR, FLUSH):
            return b""
        if opcode == GETXATTR:
            size, _ = _GETXATTR_IN.unpack_from(body)
            name = body[_GETXATTR_IN.size :].split(b"\0", 1)[0].decode(errors="surrogateescape")
            value = self._entry(node).xattrs.get(name)
            if value is None:
                raise OSError(errno.ENODATA, "no such attribute")
            return self._sized(value, size)
        if opcode == LISTXATTR:
            (size, _) = _GETXATTR_IN.unpack_from(body)
            names = b"".join(n.encode(errors="surrogateescape") + b"\0" for n in self._entry(node).xattrs)
            return self._sized(names, size)
        if opcode == STATFS:
            root = self.index.entries[ROOT_NODE]
            return _STATFS.pack(
                0, 0, 0, len(self.index.entries), 0, root.st.st_blksize, 255, 4096, 0, *[0] * 6
            )
        if opcode == ACCESS:
            return b""
        raise OSError(errno.ENOSYS, "not supported")

    @staticmethod
    def _sized(value: bytes, size: int) -> bytes:
        if size == 0:
            return _GETXATTR_OUT.pack(len(value), 0)
        if len(value) > size:
            raise OSError(errno.ERANGE, "buffer too small")
        return value

    def _readdir(self, entry: Entry, offset: int, size: int) -> bytes:
        if not stat.S_ISDIR(entry.st.st_mode):
            raise OSError(errno.ENOTDIR, "not a directory")
        names = [(b".", entry.node), (b"..", entry.node), *entry.children.items()]
        out = bytearray()
        for position in range(offset, len(names)):
            name, child = names[position]
            mode = self.index.entries[child].st.st_mode
            record = _DIRENT.pack(self.index.entries[child].st.st_ino, position + 1, len(name), mode >> 12)
            record += name + b"\0" * (-(len(record) + len(name)) % 8)
            if len(out) + len(record) > size:
                break
            out += record
        return bytes(out)
