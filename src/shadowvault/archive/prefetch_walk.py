"""The metadata prefetch's own program: lstat() everything below its roots, in the walk's order,
and hand the walk each directory's listing with its entries' lstat() fields.

Run by archive/metadata_prefetch.py as `python -I -S prefetch_walk.py PID ROOT...`: a file run in
isolated mode without `site`, importing nothing but marshal, os, signal, struct and sys, so the
process costs the interpreter and little more (~5 MiB of PSS against ~8.5 as `-m shadowvault...`,
which brought in site, logging and subprocess; every process a backup starts counts in its peak).

It reads metadata only (directory listings and lstat: never file content, never xattrs), stays
on each root's filesystem, follows no symlink, ignores Ctrl-C (the backup stops it) and ends when
it is done, once the backup's process is no longer its parent, or once nobody reads its output.

Its output (stdout, a pipe the walk reads) is one record per directory listed, in walk order:
a 4-byte little-endian length, then marshal data of (directory path, names, kinds, stats): the
names sorted, each entry's kind as its listing gives it ("dir", "symlink" or "file"), and its
lstat() fields in `entry_stat.ListedStat`'s order, or None where lstat() failed (the walk asks
again itself). A directory of more than MAX_LISTED entries has none (its record would double what
the walk holds of it). The pipe's buffer keeps it some directories ahead of the walk, no more.
"""

from __future__ import annotations

import marshal
import os
import signal
import struct
import sys

MAX_LISTED = 1 << 16  # a directory with more entries has no record: the walk lists it itself
PARENT_CHECK_EVERY = 4096  # entries between two looks at whether the backup's process is still there


def prefetch(roots: list[bytes], parent: int, out: int | None = None) -> None:
    """lstat() everything below `roots` (each on its own filesystem), depth first in name order,
    writing each directory's record to `out` when given; stop once `parent` is no longer this
    process's parent."""
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
            kinds: list[str] = []
            stats: list[tuple[int, ...] | None] = []
            for entry in entries:
                kinds.append(listed_kind(entry))
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    stats.append(None)
                    continue
                stats.append(
                    (
                        st.st_mode,
                        st.st_ino,
                        st.st_dev,
                        st.st_nlink,
                        st.st_uid,
                        st.st_gid,
                        st.st_size,
                        st.st_atime_ns,
                        st.st_mtime_ns,
                        st.st_ctime_ns,
                        st.st_blocks,
                        st.st_rdev,
                    )
                )
                if kinds[-1] == "dir" and st.st_dev == device:
                    below.append(entry.path)
            if out is not None and len(entries) <= MAX_LISTED:
                record = marshal.dumps((directory, [entry.name for entry in entries], kinds, stats))
                _write_all(out, struct.pack("<I", len(record)) + record)
            seen += len(entries)
            if seen >= PARENT_CHECK_EVERY:
                seen = 0
                if os.getppid() != parent:
                    return
            stack.extend(reversed(below))  # the first name is walked first, as the backup does


def listed_kind(entry: os.DirEntry[bytes]) -> str:
    """The type a directory listing gives an entry (no stat needed); "file" when it does not say.
    (The walk's own rule too, where it lists a directory itself.)"""
    try:
        if entry.is_symlink():
            return "symlink"
        if entry.is_dir(follow_symlinks=False):
            return "dir"
    except OSError:
        pass
    return "file"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the backup handles Ctrl-C, and stops this
    try:
        prefetch([os.fsencode(root) for root in argv[1:]], int(argv[0]), sys.stdout.fileno())
    except BrokenPipeError:  # the walk is done with it
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
