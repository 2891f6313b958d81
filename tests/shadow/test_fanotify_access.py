"""What the fanotify listener saves before an access, from the system call the accessing thread is in.

The classification is conservative: only calls known to read, and opens known not to truncate, save
nothing; writes save their range; anything else saves the whole file. Numbers are x86_64's.
"""

from __future__ import annotations

import subprocess
import sys
import time

from shadowvault.shadow.providers.fanotify_access import Save, blocked_call, on_access, on_open

O_RDONLY, O_WRONLY, O_CREAT, O_TRUNC = 0, 1, 0o100, 0o1000
AT_FDCWD = 0xFFFFFF9C


def test_opens_save_the_whole_file_only_when_they_truncate_or_are_unknown():
    assert on_open([257, AT_FDCWD, 0x1000, O_RDONLY, 0, 0, 0]) is Save.NOTHING  # openat, read only
    assert on_open([257, AT_FDCWD, 0x1000, O_WRONLY, 0, 0, 0]) is Save.NOTHING  # for writing: by range later
    assert on_open([257, AT_FDCWD, 0x1000, O_WRONLY | O_CREAT | O_TRUNC, 0o644, 0, 0]) is Save.WHOLE
    assert on_open([2, 0x1000, O_TRUNC, 0, 0, 0, 0]) is Save.WHOLE  # open(2)
    assert on_open([85, 0x1000, 0o644, 0, 0, 0, 0]) is Save.WHOLE  # creat always truncates
    assert on_open([437, AT_FDCWD, 0x1000, 0x2000, 24, 0, 0]) is Save.WHOLE  # openat2: flags not read
    assert on_open([59, 0x1000, 0x2000, 0x3000, 0, 0, 0]) is Save.NOTHING  # execve maps, never truncates
    assert on_open(None) is Save.WHOLE  # not in a system call (io_uring worker, ...)


def test_accesses_save_nothing_for_reads_their_range_for_writes_and_all_else_whole():
    for read in (0, 17, 19, 295, 327):
        assert on_access([read, 3, 0, 0, 0, 0, 0], 4096) is Save.NOTHING
    for write in (1, 18, 20, 296, 328):
        assert on_access([write, 3, 0, 0, 0, 0, 0], 4096) is Save.RANGE
    assert on_access([18, 3, 0, 0, 0, 0, 0], 0) is Save.WHOLE  # a write with no range
    for other in (77, 76, 285, 326, 40, 275, 9):  # ftruncate, truncate, fallocate, copy_file_range, ...
        assert on_access([other, 3, 0, 0, 0, 0, 0], 4096) is Save.WHOLE
    assert on_access(None, 8192) is Save.WHOLE  # a page fault


def test_the_call_a_blocked_thread_is_in_is_read_from_proc():
    child = subprocess.Popen([sys.executable, "-c", "import os; os.read(0, 1)"], stdin=subprocess.PIPE)
    try:
        for _ in range(500):
            call = blocked_call(child.pid)
            if call is not None and call[0] == 0:
                break
            time.sleep(0.01)
        assert call is not None and call[0] == 0 and call[1] == 0  # read(0, ...)
    finally:
        child.kill()
        child.wait()
    assert blocked_call(child.pid) is None
