"""The bulk-loaded index kept on local disk, so a command does not rebuild it from every index file.

Reading a repository's index means decrypting and decoding every index file and sorting every
blob's key: ~0.3 s at 100k blobs and seconds at a million, for each command that needs it (a
no-change backup of 100k files spent a tenth of its time there). What is built depends only on the
set of index files, whose names are the hashes of their content, so it is kept under the cache
directory (`SHADOWVAULT_CACHE_DIR`, else $XDG_CACHE_HOME/shadowvault, else ~/.cache/shadowvault):
`index/<repository id>/bulk`, one file per repository, with the names of the files it was built
from. Its arrays are mapped in place (only the pages lookups touch are mapped, and let go while
lookups are few: a small backup into a repository of a million blobs holds under 1 MiB of it, not
~60), and the index files written
since (each backup writes a few) are read on top of it, as a backup's own new packs are; damage
records and this process's packs are applied after, as after a build. When files it was built
from are gone (prune merged them) or many were added, the index is built anew and replaces the
kept one.

The file is authenticated with a key derived from the repository's id key (keyed BLAKE3 over all
of it): a file that is damaged, cut short, or written by anyone without the repository's keys is
ignored and rebuilt, never used (a wrong location would read as damage in the repository). It is
written under a temporary name and renamed, so readers never see half of one, and a process that
maps it keeps its own. Safe to delete at any time (never cut it in place); `check` never uses it
(it reads every index file, which is its job).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import mmap
import os
import re
import sys
from collections.abc import Collection
from pathlib import Path
from typing import BinaryIO

import blake3
import msgspec

from shadowvault.errors import IntegrityError
from shadowvault.fsutil import open_regular
from shadowvault.repo.cache_dir import default_cache_root, private_dir
from shadowvault.repo.index import BlobIndex
from shadowvault.repo.index_sorted import BulkParts
from shadowvault.typed_decoding import decode_msgpack

log = logging.getLogger(__name__)

MAGIC = b"svbulk1\n"
MAC_CONTEXT = b"shadowvault bulk index cache v1"
_REPOSITORY_ID = re.compile(r"[0-9a-f]{16,128}")
_ARRAYS = ("keys", "ids", "packs_offsets", "lengths", "raw_lengths", "flags", "directory", "packs", "pending")
_TYPECODES = {
    "keys": "Q",
    "packs_offsets": "Q",
    "lengths": "I",
    "raw_lengths": "I",
    "directory": "I",
    "pending": "I",
}
_MAX_HEADER = 4096
_TAG = 32  # the keyed BLAKE3 tag at the end
TAG_PIECE = 1 << 20  # what of the file is read at once to check its tag
# A fault on a mapped file maps what the page cache holds around it: the 64 KiB window, or on
# Linux 6.18 the whole large folio (a file read ahead is cached in folios of up to 2 MiB: eight
# lookups mapped 11 MiB). So what the page cache held of the file is let go (the command that
# wrote it left large folios), the file is read with readahead off, which caches it page by page
# (a cold read of 52 MB: ~0.05 s), and its mapped pages are let go every LET_GO_EVERY lookups (one
# of a new blob touches two) until LOOKUPS_KEPT: a small backup's 2,000 lookups into a million
# blobs mapped all 8.8 MB of keys, and a command that looks up more keeps what it touches (a
# no-change backup of a million files would fault its pages in again, ~4 s).
LET_GO_EVERY = 8
LOOKUPS_KEPT = 16384


def _offsets(header_end: int, sizes: list[int]) -> list[int]:
    """Where each section starts (8-byte aligned, so the arrays are mapped in place), and last,
    where the tag starts."""
    offsets = []
    at = header_end
    for size in sizes:
        at = (at + 7) & ~7
        offsets.append(at)
        at += size
    offsets.append((at + 7) & ~7)
    return offsets


class _Header(msgspec.Struct, array_like=True):
    byteorder: str  # the arrays are this machine's own
    shift: int
    directory_shift: int
    sizes: list[int]  # bytes of the names and of each of _ARRAYS, in order


class _PagesLetGo:
    """Lets go of a mapped kept index's pages while lookups are few (LET_GO_EVERY, LOOKUPS_KEPT).
    Its pages stay in the page cache: a lookup after maps them again without reading."""

    def __init__(self, mapped: mmap.mmap, size: int) -> None:
        self._mapped, self._size = mapped, size
        self._lookups = 0
        self._since = 0

    def __call__(self, ids: int) -> bool:
        """Count a lookup call of `ids` ids; False once they are many (keep the pages)."""
        self._lookups += ids
        self._since += ids
        if self._since >= LET_GO_EVERY:
            self._since = 0
            self._mapped.madvise(mmap.MADV_DONTNEED, 0, self._size)  # mapped as long as this lives
        return self._lookups < LOOKUPS_KEPT


class IndexCache:
    """The kept bulk index of one repository."""

    def __init__(self, directory: Path, id_key: bytes) -> None:
        self.path = directory / "bulk"
        self._key = blake3.blake3(MAC_CONTEXT, key=id_key).digest()

    @classmethod
    def for_repository(cls, repository_id: str, id_key: bytes) -> IndexCache | None:
        """The cache of this repository; None for an id that is no plain hex name (the id comes
        from the repository's config: it must never steer a path) or a key of another size."""
        if not _REPOSITORY_ID.fullmatch(repository_id) or len(id_key) != 32:
            return None
        return cls(default_cache_root() / "index" / repository_id, id_key)

    def load(self) -> tuple[BlobIndex, frozenset[str]] | None:
        """The kept index and the names of the index files it was built from, if it is intact."""
        try:
            with os.fdopen(open_regular(self.path), "rb", buffering=0) as f:  # a FIFO blocked for ever
                return self._map(f)
        except FileNotFoundError:
            return None
        except (OSError, IntegrityError, ValueError, msgspec.DecodeError) as err:
            log.debug("the kept index %s is not used: %s", self.path, err)
            return None

    def _map(self, f: BinaryIO) -> tuple[BlobIndex, frozenset[str]] | None:
        # cached page by page (LET_GO_EVERY): not in the large folios the command that wrote it left
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        start = f.read(len(MAGIC) + 4)
        if start[: len(MAGIC)] != MAGIC or len(start) != len(MAGIC) + 4:
            raise IntegrityError("not a kept index")
        header_size = int.from_bytes(start[len(MAGIC) :], "big")
        if header_size > _MAX_HEADER:
            raise IntegrityError("its header is too long")
        header = decode_msgpack(f.read(header_size), _Header)
        if header.byteorder != sys.byteorder:
            return None  # kept on another machine
        if len(header.sizes) != 1 + len(_ARRAYS):
            raise IntegrityError("it does not list its arrays")
        offsets = _offsets(len(start) + header_size, header.sizes)
        size = os.fstat(f.fileno()).st_size
        if size != offsets[-1] + _TAG:
            raise IntegrityError("it was cut short")
        tag = os.pread(f.fileno(), _TAG, size - _TAG)
        if not hmac.compare_digest(tag, self._tag(f.fileno(), size - _TAG)):
            raise IntegrityError("it does not authenticate")
        mapped = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)  # stays open with its views
        view = memoryview(mapped)
        sections = [view[at : at + length] for at, length in zip(offsets, header.sizes, strict=False)]
        names, *arrays = sections
        parts: dict[str, memoryview | bytes] = {}
        for name, section in zip(_ARRAYS, arrays, strict=True):
            typecode = _TYPECODES.get(name)
            if typecode is not None:
                if len(section) % (8 if typecode == "Q" else 4):
                    raise IntegrityError(f"its {name} are not whole")
                parts[name] = section.cast("Q") if typecode == "Q" else section.cast("I")
            else:
                parts[name] = bytes(section) if name == "packs" else section
        index = BlobIndex.from_bulk(
            BulkParts(shift=header.shift, directory_shift=header.directory_shift, **parts)  # type: ignore[arg-type]
        )
        index.watch_bulk_lookups(_PagesLetGo(mapped, size))
        built_from = bytes(names).decode()
        return index, frozenset(built_from.split("\n")) if built_from else frozenset()

    def _tag(self, fd: int, end: int) -> bytes:
        """The keyed tag of the file's first `end` bytes, read a piece at a time into one buffer:
        not this process's memory (a kept index of a million blobs is ~57 MB, which read at once
        was the peak of a small backup into that repository)."""
        mac = blake3.blake3(key=self._key)
        piece = memoryview(bytearray(TAG_PIECE))
        at = 0
        while at < end:
            got = os.preadv(fd, [piece[: min(TAG_PIECE, end - at)]], at)
            if not got:
                raise IntegrityError("it was cut short")
            mac.update(piece[:got])
            at += got
        return mac.digest()

    def save(self, names: Collection[str], index: BlobIndex) -> None:
        """Keep the index built from these index files (replacing the last one kept); a cache
        that cannot be written is only not kept."""
        parts = index.bulk_parts()
        names_section = "\n".join(sorted(names)).encode()
        sections = [
            memoryview(names_section),
            *(memoryview(getattr(parts, name)).cast("B") for name in _ARRAYS),
        ]
        sizes = [len(section) for section in sections]
        raw_header = msgspec.msgpack.encode(_Header(sys.byteorder, parts.shift, parts.directory_shift, sizes))
        offsets = _offsets(len(MAGIC) + 4 + len(raw_header), sizes)
        tmp = self.path.with_name(f".bulk-{os.getpid()}.tmp")
        try:
            private_dir(self.path.parent)
            mac = blake3.blake3(key=self._key)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()  # left by a process of this pid that was killed while writing
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with os.fdopen(os.open(tmp, flags, 0o600), "wb") as f:
                for piece in (MAGIC + len(raw_header).to_bytes(4, "big"), raw_header):
                    mac.update(piece)
                    f.write(piece)
                for at, section in zip(offsets, sections, strict=False):
                    padding = bytes(at - f.tell())  # each section starts 8-byte aligned
                    for data in (padding, section):
                        mac.update(data)
                        f.write(data)
                padding = bytes(offsets[-1] - f.tell())
                mac.update(padding)
                f.write(padding)
                f.write(mac.digest())
            os.replace(tmp, self.path)
        except OSError as err:
            log.debug("the index is not kept in %s: %s", self.path, err)
            with contextlib.suppress(OSError):
                tmp.unlink()
