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
from collections.abc import Callable

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
    ) -> None:
        self.sources = sources
        self.stats = stats
        self.skipped = skipped  # an original path left out of the backup (excluded, shadow dirs)
        self.grafts = grafts or {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sv-scan", daemon=True)

    def __enter__(self) -> Scanner:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        stack = [(s.read_path, s.orig_path) for s in self.sources]
        files = size = entries = 0
        while stack and not self._stop.is_set():
            read, orig = stack.pop()
            entries += 1
            try:
                st = os.lstat(read)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                files, size = files + 1, size + st.st_size
            elif stat.S_ISDIR(st.st_mode):
                try:
                    with os.scandir(read) as it:
                        names = [entry.name for entry in it]
                except OSError:
                    names = []
                for name in names:
                    child = join(orig, name)
                    if self.skipped(child):
                        continue
                    graft = self.grafts.get(child)
                    stack.append((graft.read_path if graft else join(read, name), child))
            if entries % 512 == 0:
                self._publish(files, size, finished=False)
        self._publish(files, size, finished=not stack)

    def _publish(self, files: int, size: int, *, finished: bool) -> None:
        with self.stats.lock:
            self.stats.scan_files, self.stats.scan_bytes = files, size
            self.stats.scan_finished = finished
