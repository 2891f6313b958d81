"""The bulk-loaded index kept on local disk, so a command does not rebuild it from every index file.

Reading a repository's index means decrypting and decoding every index file and sorting every
blob's key: ~0.3 s at 100k blobs and seconds at a million, for each command that needs it (a
no-change backup of 100k files spent a tenth of its time there). What is built depends only on the
set of index files, whose names are the hashes of their content, so it is kept under the cache
directory (`SHADOWVAULT_CACHE_DIR`, else $XDG_CACHE_HOME/shadowvault, else ~/.cache/shadowvault):
`index/<repository id>/bulk`, one file per repository, with the names of the files it was built
from. Its arrays are read back in milliseconds, and the index files written since (each backup
writes a few) are read on top of it, as a backup's own new packs are; damage records and this
process's packs are applied after, as after a build. When files it was built from are gone (prune
merged them) or many were added, the index is built anew and replaces the kept one.

The file is authenticated with a key derived from the repository's id key (keyed BLAKE3 over all
of it): a file that is damaged, cut short, or written by anyone without the repository's keys is
ignored and rebuilt, never used (a wrong location would read as damage in the repository). It is
written under a temporary name and renamed, so readers never see half of one. Safe to delete at
any time; `check` never uses it (it reads every index file, which is its job).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
import sys
from array import array
from collections.abc import Collection
from pathlib import Path
from typing import BinaryIO

import blake3
import msgspec

from shadowvault.errors import IntegrityError
from shadowvault.repo.backend_s3_cache import default_cache_root, private_dir
from shadowvault.repo.index import BlobIndex, BulkParts

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


class _Header(msgspec.Struct, array_like=True):
    byteorder: str  # the arrays are this machine's own
    shift: int
    directory_shift: int
    sizes: list[int]  # bytes of the names and of each of _ARRAYS, in order


class IndexCache:
    """The kept bulk index of one repository."""

    def __init__(self, directory: Path, id_key: bytes) -> None:
        self.path = directory / "bulk"
        self._key = blake3.blake3(MAC_CONTEXT, key=id_key).digest()

    @classmethod
    def for_repository(cls, repository_id: str, id_key: bytes) -> IndexCache | None:
        """The cache of this repository; None for an id that is no plain hex name (the id comes
        from the repository's config: it must never steer a path)."""
        if not _REPOSITORY_ID.fullmatch(repository_id):
            return None
        return cls(default_cache_root() / "index" / repository_id, id_key)

    def load(self) -> tuple[BlobIndex, frozenset[str]] | None:
        """The kept index and the names of the index files it was built from, if it is intact."""
        try:
            with open(self.path, "rb") as f:
                return self._read(f)
        except FileNotFoundError:
            return None
        except (OSError, IntegrityError, ValueError, msgspec.DecodeError) as err:
            log.debug("the kept index %s is not used: %s", self.path, err)
            return None

    def _read(self, f: BinaryIO) -> tuple[BlobIndex, frozenset[str]] | None:
        mac = blake3.blake3(key=self._key)
        start = f.read(len(MAGIC) + 4)
        if start[: len(MAGIC)] != MAGIC or len(start) != len(MAGIC) + 4:
            raise IntegrityError("not a kept index")
        header_size = int.from_bytes(start[len(MAGIC) :], "big")
        if header_size > _MAX_HEADER:
            raise IntegrityError("its header is too long")
        raw_header = f.read(header_size)
        mac.update(start)
        mac.update(raw_header)
        header = msgspec.msgpack.decode(raw_header, type=_Header)
        if header.byteorder != sys.byteorder:
            return None  # kept on another machine
        if len(header.sizes) != 1 + len(_ARRAYS):
            raise IntegrityError("it does not list its arrays")
        raw_names = f.read(header.sizes[0])
        mac.update(raw_names)
        parts: dict[str, array[int] | bytearray | bytes] = {}
        for name, size in zip(_ARRAYS, header.sizes[1:], strict=True):
            raw = f.read(size)
            if len(raw) != size:
                raise IntegrityError("it was cut short")
            mac.update(raw)
            typecode = _TYPECODES.get(name)
            if typecode is None:
                parts[name] = raw if name == "packs" else bytearray(raw)
            else:
                values = array(typecode)
                if len(raw) % values.itemsize:
                    raise IntegrityError(f"its {name} are not whole")
                values.frombytes(raw)
                parts[name] = values
            del raw
        if not hmac.compare_digest(f.read(32), mac.digest()):
            raise IntegrityError("it does not authenticate")
        index = BlobIndex.from_bulk(
            BulkParts(shift=header.shift, directory_shift=header.directory_shift, **parts)  # type: ignore[arg-type]
        )
        return index, frozenset(raw_names.decode().split("\n")) if raw_names else frozenset()

    def save(self, names: Collection[str], index: BlobIndex) -> None:
        """Keep the index built from these index files (replacing the last one kept); a cache
        that cannot be written is only not kept."""
        parts = index.bulk_parts()
        sections = ["\n".join(sorted(names)).encode(), *(getattr(parts, name) for name in _ARRAYS)]
        sizes = [len(s) if isinstance(s, bytes | bytearray) else len(s) * s.itemsize for s in sections]
        raw_header = msgspec.msgpack.encode(_Header(sys.byteorder, parts.shift, parts.directory_shift, sizes))
        tmp = self.path.with_name(f".bulk-{os.getpid()}.tmp")
        try:
            private_dir(self.path.parent)
            mac = blake3.blake3(key=self._key)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()  # left by a process of this pid that was killed while writing
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with os.fdopen(os.open(tmp, flags, 0o600), "wb") as f:
                for piece in (MAGIC + len(raw_header).to_bytes(4, "big"), raw_header, *sections):
                    data = piece if isinstance(piece, bytes | bytearray) else memoryview(piece).cast("B")
                    mac.update(data)
                    f.write(data)
                f.write(mac.digest())
            os.replace(tmp, self.path)
        except OSError as err:
            log.debug("the index is not kept in %s: %s", self.path, err)
            with contextlib.suppress(OSError):
                tmp.unlink()
