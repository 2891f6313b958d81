"""What a backup walk is given and what it counts: the sources, the live counters, path text.

Where each entry is read (`read_path`: a shadow) and what is recorded (`orig_path`: the original
path) are kept apart, so a backup of a shadow records the paths users know.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from shadowvault.archive.tree_paths import text
from shadowvault.cancellation import Cancellation

log = logging.getLogger(__name__)


@dataclass
class Source:
    """One path to back up: where it is read, and the absolute path recorded for it."""

    orig_path: bytes
    read_path: bytes
    # the read path is a copy with inodes of its own (a reflink shadow, detected by the archiver when
    # not given): incremental matching then uses the live original's identity
    copied: bool | None = None


SKIPPED_PATHS = 1000  # skipped entries named one by one; past it they are only counted


@dataclass
class WalkStats:
    """Counters a progress display can read at any time (updated under `lock`)."""

    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    dirs: int = 0
    others: int = 0
    bytes_total: int = 0  # size of every file in the snapshot
    bytes_read: int = 0  # bytes actually read from files (unmodified files are not read)
    bytes_holes: int = 0  # bytes of holes recorded without being read
    blobs_saved: int = 0
    files_done: int = 0  # files whose content is stored (read, or found unmodified)
    bytes_done: int = 0  # bytes of those files: read, or found unmodified (not read)
    scan_files: int = 0  # the files the scanner found so far (archive/scan.py), for a percentage
    scan_bytes: int = 0
    scan_finished: bool = False  # scan_files and scan_bytes are the totals
    reading_path: bytes = b""  # the file a reader thread started last (the original path)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): stored, but note it
    skipped: dict[str, int] = field(default_factory=dict)  # left out on purpose: kind -> count
    skipped_paths: list[tuple[str, str, str]] = field(default_factory=list)  # the first (path, kind, reason)
    current_path: bytes = b""  # the entry being walked (set without the lock: one writer)
    cancellation: Cancellation | None = None  # checked before every entry
    started: float = field(default_factory=time.monotonic)
    walk_started: float = field(default_factory=time.monotonic)  # when reading began: after the shadow set
    shadowing: bool = False  # the shadow set is being taken (writers freeze): nothing is read yet
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def skip(self, path: bytes, kind: str, reason: str) -> None:
        """Count an entry an exclude rule left out (`kind`: excluded, larger_than, cache_dir,
        if_present); the first SKIPPED_PATHS are named."""
        with self.lock:
            self.skipped[kind] = self.skipped.get(kind, 0) + 1
            if len(self.skipped_paths) < SKIPPED_PATHS:
                self.skipped_paths.append((text(path), kind, reason))

    def error(self, path: bytes | str, err: BaseException | str) -> None:
        """Record an entry that is in the snapshot without its content (or its listing), and why."""
        if isinstance(err, str):
            reason = err
        elif isinstance(err, OSError) and err.strerror:
            reason = err.strerror
        else:
            reason = str(err)
        shown = path if isinstance(path, str) else text(path)
        log.debug("%s: %s", shown, reason)  # in the result: the caller says it
        with self.lock:
            self.errors.append((shown, reason))

    def warn(self, path: bytes | str, reason: str) -> None:
        """Record an entry that is stored, with something to note about it."""
        shown = path if isinstance(path, str) else text(path)
        log.debug("%s: %s", shown, reason)
        with self.lock:
            self.warnings.append((shown, reason))

    @property
    def current(self) -> str:
        """The file being read, else the entry being walked."""
        return text(self.reading_path or self.current_path)

    @property
    def files(self) -> int:
        return self.files_new + self.files_changed + self.files_unmodified

    def as_dict(self) -> dict[str, int]:
        return {
            "files_new": self.files_new,
            "files_changed": self.files_changed,
            "files_unmodified": self.files_unmodified,
            "dirs": self.dirs,
            "others": self.others,
            "bytes_total": self.bytes_total,
            "bytes_read": self.bytes_read,
            "bytes_holes": self.bytes_holes,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
        }
