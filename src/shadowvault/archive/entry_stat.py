"""What the walk knows of an entry's inode: an lstat() result, its own or the metadata prefetch's.

The prefetch process (archive/prefetch_walk.py) lstat()s every entry ahead of the walk and sends
the fields a backup uses; the walk takes them as `ListedStat`, a tuple with os.stat_result's
attribute names (making an os.stat_result of them cost as much as the lstat() it saves).
"""

from __future__ import annotations

import os
from typing import NamedTuple, TypeAlias


class ListedStat(NamedTuple):
    """The lstat() fields a backup reads, in the order the prefetch process sends them."""

    st_mode: int
    st_ino: int
    st_dev: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_size: int
    st_atime_ns: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_blocks: int
    st_rdev: int


EntryStat: TypeAlias = "os.stat_result | ListedStat"
