"""The trees' metadata read ahead of the walk, by another process.

A backup's walk lists each directory and lstat()s each entry from one Python thread. On a cold
cache every inode is a disk read waited for in turn: a no-change backup of 100k files took
2.6-3.3 s cold against 2.1 s warm (2 CPUs). A prefetch process walks the same trees in the same
order (names sorted, depth first) and lstat()s everything on its way, so those reads happen on
the other core, ahead of the walk, and the walk finds the kernel's inode and dentry caches warm.

The program is archive/prefetch_walk.py, run as a file (what it reads and when it ends are said
there); this module starts and stops it. It is only a hint: if it cannot start or fails, the walk
goes on as before. `SHADOWVAULT_PREFETCH=0` turns it off.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from shadowvault.archive import prefetch_walk

log = logging.getLogger(__name__)

PREFETCH_ENV = "SHADOWVAULT_PREFETCH"


class MetadataPrefetch:
    """The prefetch process of one walk: started with the roots it reads, stopped with the walk."""

    def __init__(self, roots: list[bytes]) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        if os.environ.get(PREFETCH_ENV, "1") == "0" or not roots:
            return
        try:
            program = [sys.executable, "-I", "-S", prefetch_walk.__file__, str(os.getpid())]
            self._process = subprocess.Popen(
                [*program, *map(os.fsdecode, roots)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError as err:
            log.debug("no metadata prefetch: %s", err)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        """End the prefetch (done or not) and reap it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
