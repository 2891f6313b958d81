"""Directories are written as soon as their files are stored, not only in walk order.

A large file read first (large/ sorts before small/ in many trees) once held every reader thread:
the small files' batches waited for it, and every directory walked meanwhile waited, nodes and all,
behind the first one still reading. Now large files have threads of their own and a directory
finished behind one still waiting is written out of order; the snapshot is the same.

The test holds the large files until the walk has ended and lets each small directory's batch finish
before the walk goes on, so what it counts does not depend on the machine's speed or load (under a
loaded CI the large files were once read before enough directories were walked).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from shadowvault.archive.file_blobs import StoredContent
from shadowvault.archive.finished_dirs import SWEEP_AFTER, DirJob, FinishedDirs, ParentEntries
from shadowvault.archive.walker import Archiver, Source, WalkStats
from shadowvault.repo.tree import Node
from tests.archive.helpers import assert_same_tree, new_repo, restore
from tests.fixtures.loopfs import loop_filesystem

DIRECTORIES = 4 * SWEEP_AFTER
LARGE_FILES = 8  # more than there are reader threads


HELD = 60.0  # seconds at most that a wait below holds: a regression fails instead of hanging


class _CountingDirs(FinishedDirs):
    """Counts the directories written out of walk order; says when the walk has ended."""

    def __init__(self, *args: object, walk_ended: threading.Event) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.out_of_order = 0
        self.walk_ended = walk_ended

    def drain(self, *, block: bool) -> None:
        if block:
            self.walk_ended.set()
        super().drain(block=block)

    def _sweep(self) -> None:
        waiting = len(self._finished)
        super()._sweep()
        self.out_of_order += waiting - len(self._finished)


class _Counting(Archiver):
    """Holds the large files until the walk ends and each directory of small files until its files
    are stored; its directories count those written out of walk order."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.walk_ended = threading.Event()
        self.counting = _CountingDirs(
            self.store, self.reader, self.stats, self._anchors, walk_ended=self.walk_ended
        )
        self.finished = self.counting
        read_file = self.reader._read_file

        def held_read_file(access: bytes, node: Node, label: bytes = b"") -> StoredContent:
            if node.size >= self.reader.single_chunk:
                self.walk_ended.wait(HELD)
            return read_file(access, node, label)

        self.reader._read_file = held_read_file

    def _finish(self, job: DirJob, parent: ParentEntries | None = None) -> None:
        if all(node.size < self.reader.single_chunk for node, _, _, _ in job.files):
            self.reader.flush()
            deadline = time.monotonic() + HELD
            while not job.ready() and time.monotonic() < deadline:
                time.sleep(0.001)
        super()._finish(job, parent)


def _tree(source: os.PathLike[str]) -> None:
    os.makedirs(os.path.join(source, "a-large"))
    for n in range(LARGE_FILES):  # 8 MiB each that do not compress: read long after the small files
        with open(os.path.join(source, "a-large", f"data{n}"), "wb") as f:
            f.write(os.urandom(8 << 20))
    for d in range(DIRECTORIES):
        directory = os.path.join(source, f"d{d:03}")
        os.makedirs(directory)
        for n in range(3):
            with open(os.path.join(directory, f"f{n}"), "wb") as f:
                f.write(b"%d %d\n" % (d, n) * (n + 1))


def test_directories_finished_behind_a_large_file_are_written_out_of_order():
    with loop_filesystem("ext4", size=512 << 20) as ext4:
        _back_up_and_restore(ext4.mount)


def _back_up_and_restore(mount: Path) -> None:
    source = mount / "src"
    _tree(source)
    repo = new_repo(mount / "repo")
    raw = os.fsencode(source)
    stats = WalkStats()
    archiver = _Counting(repo, stats=stats)
    root = archiver.archive([Source(raw, raw)])
    repo.flush()
    assert not stats.errors and stats.files_done == LARGE_FILES + 3 * DIRECTORIES
    # all but the last few directories (fewer than a sweep's worth) before the large files are read
    out_of_order = archiver.counting.out_of_order
    assert out_of_order >= DIRECTORIES - SWEEP_AFTER, "written while the large file was still read"

    restore(repo, root, mount / "out")
    assert_same_tree(source, mount / "out" / source.relative_to("/"))

    # an incremental backup of a changed small file and the large file: the same again
    with open(source / "d007" / "f1", "ab") as f:
        f.write(b"more\n")
    with open(source / "a-large" / "data0", "r+b") as f:
        f.write(b"changed")
    second = _Counting(repo, stats=WalkStats())
    again = second.archive([Source(raw, raw)], root)
    repo.flush()
    restore(repo, again, mount / "again")
    assert_same_tree(source, mount / "again" / source.relative_to("/"))
