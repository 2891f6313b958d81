"""The trees' metadata read ahead of the walk, by another process.

A backup's walk lists each directory and lstat()s each entry from one Python thread. On a cold
cache every inode is a disk read waited for in turn: a no-change backup of 100k files took
2.6-3.3 s cold against 2.1 s warm (2 CPUs). A prefetch process walks the same trees in the same
order (names sorted, depth first) and lstat()s everything on its way, so those reads happen on
the other core, ahead of the walk, and the walk finds the kernel's inode and dentry caches warm.

It reads metadata only (directory listings and lstat: never file content, never xattrs), stays
on each root's filesystem, and ends when it is done, when the backup stops it, or when the
backup's process is gone. It is only a hint: if it cannot start or fails, the walk goes on as
before. `SHADOWVAULT_PREFETCH=0` turns it off.

`python -m shadowvault.archive.metadata_prefetch ROOT...` (this module, as its own program).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

log = logging.getLogger(__name__)

PREFETCH_ENV = "SHADOWVAULT_PREFETCH"
PARENT_CHECK_EVERY = 4096  # entries between two looks at whether the backup's process is still there


def prefetch(roots: list[bytes], parent: int) -> None:
    """lstat() everything below `roots` (each on its own filesystem), depth first in name order;
    stop once `parent` is no longer this process's parent."""
    seen = 0
    for root in roots:
        try:
            device = os.lstat(root).st_dev
        except OSError:
            continue
        stack = [root]
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as listing:
                    entries = sorted(listing, key=lambda entry: entry.name)
            except OSError:
                continue
            below: list[bytes] = []
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if entry.is_dir(follow_symlinks=False) and st.st_dev == device:
                    below.append(entry.path)
            seen += len(entries)
            if seen >= PARENT_CHECK_EVERY:
                seen = 0
                if os.getppid() != parent:
                    return
            stack.extend(reversed(below))  # the first name is walked first, as the backup does


class MetadataPrefetch:
    """The prefetch process of one walk: started with the roots it reads, stopped with the walk."""

    def __init__(self, roots: list[bytes]) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        if os.environ.get(PREFETCH_ENV, "1") == "0" or not roots:
            return
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(os.getpid()), *map(os.fsdecode, roots)],
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


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the backup handles Ctrl-C, and stops this
    prefetch([os.fsencode(root) for root in argv[1:]], int(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
