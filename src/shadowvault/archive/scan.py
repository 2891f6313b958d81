"""Counting what a backup will cover, beside it: the totals a progress display needs for a percentage.

A thread walks the same sources as the archiver (lstat only, no reads) and adds up regular files
and their sizes into `WalkStats.scan_files` / `scan_bytes`; `scan_finished` says the totals are
final. It is an estimate (files may change meanwhile) and it is never waited for: the backup stops
it when it is done.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator

from shadowvault.archive.exclude_rules import ExcludeRules
from shadowvault.archive.tree_paths import join
from shadowvault.archive.walk_stats import Source, WalkStats


class Scanner:
    """Counts files and bytes below the sources on a thread of its own, until done or stopped."""

    def __init__(
        self,
        sources: list[Source],
        stats: WalkStats,
        *,
        skipped: Callable[[bytes], bool] = lambda _path: False,
        grafts: dict[bytes, Source] | None = None,
        rules: ExcludeRules | None = None,
    ) -> None:
        self.sources = sources
        self.stats = stats
        self.skipped = skipped  # an original path left out of the backup (excluded, shadow dirs)
        self.grafts = grafts or {}
        self.rules = rules or ExcludeRules()  # files too large and tagged directories are not counted
        self._stop = threading.Event()
        self._files = self._size = self._entries = 0
        self._thread = threading.Thread(target=self._run, name="sv-scan", daemon=True)

    def __enter__(self) -> Scanner:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        """Depth first with one open directory per level (memory does not grow with a directory's size)."""
        self._files = self._size = self._entries = 0
        stack: list[tuple[bytes, Iterator[os.DirEntry[bytes]]]] = []
        try:
            for source in self.sources:
                self._visit(source.read_path, source.orig_path, stack)
                while stack and not self._stop.is_set():
                    orig, listing = stack[-1]
                    try:
                        entry = next(listing, None)
                    except OSError:  # an unreadable directory (EIO): the walk reports it, not the scan
                        entry = None
                    if entry is None:
                        stack.pop()
                        continue
                    child = join(orig, entry.name)
                    if not self.skipped(child):
                        graft = self.grafts.get(child)
                        self._visit(graft.read_path if graft else entry.path, child, stack)
                if self._stop.is_set():
                    break
            finished = not self._stop.is_set()
        finally:
            for _, listing in stack:
                listing.close()  # type: ignore[attr-defined]
        self._publish(finished=finished)

    def _visit(
        self, read: bytes, orig: bytes, stack: list[tuple[bytes, Iterator[os.DirEntry[bytes]]]]
    ) -> None:
        try:
            st = os.lstat(read)
            if self.rules.too_large(st) is not None:
                return
            if stat.S_ISDIR(st.st_mode) and not self.rules.tagged(read):
                stack.append((orig, os.scandir(read)))
        except OSError:
            return
        if stat.S_ISREG(st.st_mode):
            self._files += 1
            self._size += st.st_size
        self._entries += 1
        if self._entries % 512 == 0:
            self._publish(finished=False)

    def _publish(self, *, finished: bool) -> None:
        with self.stats.lock:
            self.stats.scan_files, self.stats.scan_bytes = self._files, self._size
            self.stats.scan_finished = finished
