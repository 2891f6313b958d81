"""The copy-aside store of the fanotify provider: each range's old content, saved before its first change.

A file's saved chunks live in one sparse file `<store>/<inode>` at their own offsets, so a read of
the shadow takes each chunk from there when it was saved and from the live file (through the
descriptor pinned at the point in time) when it was not. A chunk is saved and read under the file's
lock: a write can only proceed once its chunks are saved, so a chunk read from the live file while
the lock shows it unsaved still holds its old content.

The store sits outside the shadowed volume (in the state directory): saving never writes to the
filesystem being watched, which may still be frozen when the first write is attempted. When a save
fails (no space), the shadow becomes invalid: every later read of it fails, it is never silently wrong.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from shadowvault.shadow.providers.fanotify_index import Entry

log = logging.getLogger(__name__)

CHUNK = 4096  # what one page written costs to save; contiguous chunks are copied in runs of up to RUN
RUN = 1 << 20


class ShadowInvalidError(Exception):
    """The shadow cannot be trusted any more (a copy aside failed, or the listener stopped)."""


@dataclass
class _Saved:
    lock: threading.Lock = field(default_factory=threading.Lock)
    fd: int = -1
    chunks: set[int] = field(default_factory=set)  # emptied once `whole`
    whole: bool = False


def _runs(chunks: list[int]) -> list[tuple[int, int]]:
    """Sorted chunk numbers as (first, count) runs of consecutive chunks, each at most RUN bytes."""
    runs: list[tuple[int, int]] = []
    for chunk in chunks:
        if runs and runs[-1][0] + runs[-1][1] == chunk and (runs[-1][1] + 1) * CHUNK <= RUN:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((chunk, 1))
    return runs


class CowStore:
    """Saved chunks of the files of one shadow, in `directory` (created 0700, removed by `remove`)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._files: dict[int, _Saved] = {}
        self._files_lock = threading.Lock()
        self.invalid: str | None = None
        self.bytes_saved = 0

    def _saved(self, entry: Entry) -> _Saved:
        with self._files_lock:
            saved = self._files.get(entry.st.st_ino)
            if saved is None:
                saved = self._files[entry.st.st_ino] = _Saved()
            return saved

    def is_whole(self, entry: Entry) -> bool:
        saved = self._files.get(entry.st.st_ino)
        return saved is not None and saved.whole

    def is_saved(self, entry: Entry, offset: int, count: int) -> bool:
        """Whether [offset, offset + count) needs no saving (already saved, or past the old size)."""
        end = min(offset + count, entry.st.st_size)
        if offset >= end:
            return True
        saved = self._files.get(entry.st.st_ino)
        if saved is None:
            return False
        if saved.whole:
            return True
        return all(c in saved.chunks for c in range(offset // CHUNK, (end - 1) // CHUNK + 1))

    def save_range(self, entry: Entry, offset: int, count: int) -> None:
        """Save the chunks of [offset, offset + count) within the file's size at the point in time."""
        size = entry.st.st_size
        end = min(offset + count, size)
        if offset >= end:
            return
        saved = self._saved(entry)
        with saved.lock:
            if not saved.whole:
                self._copy(entry, saved, range(offset // CHUNK, (end - 1) // CHUNK + 1))

    def save_whole(self, entry: Entry) -> None:
        """Save every chunk not saved yet: before a truncation, or a change we cannot locate."""
        saved = self._saved(entry)
        with saved.lock:
            if saved.whole:
                return
            size = entry.st.st_size
            if size:
                self._copy(entry, saved, range(0, (size - 1) // CHUNK + 1))
            saved.whole = True
            saved.chunks = set()

    def _copy(self, entry: Entry, saved: _Saved, chunks: range) -> None:
        try:
            if saved.fd < 0:
                path = os.path.join(self.directory, str(entry.st.st_ino))
                saved.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            size = entry.st.st_size
            for first, count in _runs([c for c in chunks if c not in saved.chunks]):
                start = first * CHUNK
                length = min(count * CHUNK, size - start)
                data = os.pread(entry.fd, length, start)
                if len(data) != length:
                    raise OSError(0, f"inode {entry.st.st_ino} is shorter than at the point in time")
                _pwrite_all(saved.fd, data, start)
                saved.chunks.update(range(first, first + count))
                self.bytes_saved += len(data)
        except OSError as err:
            self.invalid = f"saving old data of inode {entry.st.st_ino} failed: {err.strerror or err}"
            log.error("shadow invalid: %s", self.invalid)
            raise ShadowInvalidError(self.invalid) from err

    def read(self, entry: Entry, offset: int, size: int) -> bytes:
        """Bytes of the file as at the point in time: saved chunks from the store, the rest live."""
        if self.invalid:
            raise ShadowInvalidError(self.invalid)
        end = min(offset + size, entry.st.st_size)
        if offset >= end:
            return b""
        saved = self._saved(entry)
        parts = []
        with saved.lock:  # no chunk of this file is saved while we choose where to read it from
            pos = offset
            while pos < end:
                from_store = saved.whole or pos // CHUNK in saved.chunks
                stop = min((pos // CHUNK + 1) * CHUNK, end)
                while stop < end and (saved.whole or stop // CHUNK in saved.chunks) == from_store:
                    stop = min(stop + CHUNK, end)
                data = os.pread(saved.fd if from_store else entry.fd, stop - pos, pos)
                if len(data) != stop - pos:
                    raise ShadowInvalidError(f"inode {entry.st.st_ino}: short read at {pos}")
                parts.append(data)
                pos = stop
        if self.invalid:  # a save failed while we read: what we read may not be the point in time
            raise ShadowInvalidError(self.invalid)
        return b"".join(parts)

    def close(self) -> None:
        for saved in self._files.values():
            if saved.fd >= 0:
                os.close(saved.fd)
                saved.fd = -1


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
