"""Writing a blob's bytes at their place in a restored file, keeping holes where the file had them.

Used by the restore's threads and by its worker processes (archive/restore_workers.py), which
import only this of the restore.
"""

from __future__ import annotations

import os

HOLE_BLOCK = 4096
_ZEROS = bytes(HOLE_BLOCK)


def write_at(fd: int, data: bytes | memoryview, offset: int, *, sparse: bool) -> None:
    """Write `data` at `offset`; for a file that had holes, aligned all-zero blocks stay holes."""
    if sparse:
        _write_sparse(fd, data, offset)
        return
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _write_sparse(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    pos = 0
    end = len(data)
    while pos < end:
        block_end = min(end, pos + HOLE_BLOCK - (offset + pos) % HOLE_BLOCK)
        start = pos
        # gather a run of blocks of the same kind (data or zeros)
        zero = view[pos:block_end] == _ZEROS[: block_end - pos]
        pos = block_end
        while pos < end:
            nxt = min(end, pos + HOLE_BLOCK)
            if (view[pos:nxt] == _ZEROS[: nxt - pos]) != zero:
                break
            pos = nxt
        if not zero:
            write_at(fd, bytes(view[start:pos]), offset + start, sparse=False)
