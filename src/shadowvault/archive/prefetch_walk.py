"""The metadata prefetch's own program: lstat() everything below its roots, in the walk's order.

Run by archive/metadata_prefetch.py as `python -I -S prefetch_walk.py PID ROOT...`: a file run in
isolated mode without `site`, importing nothing but os, signal and sys, so the process costs the
interpreter and little more (~5 MiB of PSS against ~8.5 as `-m shadowvault...`, which brought in
site, logging and subprocess; every process a backup starts counts in its peak).

It reads metadata only (directory listings and lstat: never file content, never xattrs), stays
on each root's filesystem, follows no symlink, ignores Ctrl-C (the backup stops it) and ends when
it is done or once the backup's process is no longer its parent.
"""

from __future__ import annotations

import os
import signal
import sys

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


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the backup handles Ctrl-C, and stops this
    prefetch([os.fsencode(root) for root in argv[1:]], int(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
