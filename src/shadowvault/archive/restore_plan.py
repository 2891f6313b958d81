"""A content batch's plan: its files, where each blob they need goes, the worker tasks it is cut into.

Plain data, apart from the steps that carry it out (`restore_content` the files, `restore_reads`
the ranges) and that the threads of a batch share: a FileWrite per file, a Place per place a blob
goes (a file, the offset in it), each blob once however many places need it (`plan`); for a pack
range the restore workers do, its tasks built place by place within what one task may pass
(`TaskBuilder`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from shadowvault.archive.pack_reads import WantedBlob
from shadowvault.archive.restore_entries import TargetDir
from shadowvault.archive.restore_outcomes import Outcome
from shadowvault.archive.restore_worker import NewFile, Task, TaskBlob
from shadowvault.repo.index import BlobLocation
from shadowvault.repo.tree import Node


@dataclass(eq=False)
class FileWrite:
    """One file being restored: where it is written, what of it is known, what went wrong."""

    node: Node
    spath: bytes
    here: TargetDir
    done: Outcome
    zeros: list[int | None]  # per blob of node.content: the length of a run of zeros, else None
    tmp: bytes = b""
    fd: int | None = None
    complete: bool = False  # created with all its metadata but times (EntryWriter.create_mode)
    size: int = 0
    lengths: list[int] = field(default_factory=list)  # per blob of node.content
    # per blob, of what was written (verify only); None for a run of zeros (never read nor written)
    digests: list[bytes | None] = field(default_factory=list)
    zero_runs: list[tuple[int, int]] = field(default_factory=list)  # (offset, length), adjacent merged
    failure: str | None = None
    unwritten: int = 0  # places of its blobs not written (or failed) yet: it is finished at 0
    counted: int = 0  # its bytes in the restore's bytes_written: taken out again if it fails
    shared: bool = False  # more than one place: written by several threads, which take `opening`
    opening: threading.Lock = field(default_factory=threading.Lock)  # its first two blobs may race


@dataclass(frozen=True)
class Place:
    """Where one blob goes: a file, the offset in it, the blob's position in the file's content."""

    file: FileWrite
    offset: int
    index: int


def add_zero_run(file: FileWrite, offset: int, length: int) -> int:
    """A blob known to be zeros at `offset`: nothing to read or write, only its place in the file
    (a run joined to the one before it) and its length; returns the offset after it."""
    file.lengths.append(length)
    file.digests.append(None)
    runs = file.zero_runs
    if runs and runs[-1][0] + runs[-1][1] == offset:
        runs[-1] = (runs[-1][0], runs[-1][1] + length)
    else:
        runs.append((offset, length))
    return offset + length


Places = dict[bytes, tuple[BlobLocation, list[Place]]]  # per blob id: where it is, where it goes


def plan(
    files: list[FileWrite], lookup: Callable[[bytes], BlobLocation | None]
) -> tuple[Places, list[FileWrite]]:
    """Where each needed blob goes; the files with a blob the index does not place are read
    blob by blob (`load_blob` reloads the index, or says what is missing)."""
    places: Places = {}
    alone: list[FileWrite] = []
    for file in files:
        zeros = file.zeros
        located = [
            None if size is not None else lookup(blob_id)
            for blob_id, size in zip(file.node.content, zeros, strict=True)
        ]
        if any(location is None and size is None for location, size in zip(located, zeros, strict=True)):
            alone.append(file)
            continue
        offset = 0
        for index, (blob_id, location, size) in enumerate(
            zip(file.node.content, located, zeros, strict=True)
        ):
            if size is not None:  # a run of zeros: nothing to read or write
                offset = add_zero_run(file, offset, size)
                continue
            assert location is not None
            places.setdefault(blob_id, (location, []))[1].append(Place(file, offset, index))
            offset += location.raw_length
            file.lengths.append(location.raw_length)
            file.digests.append(b"")
            file.unwritten += 1
        file.size = offset
        file.shared = file.unwritten > 1
    return places, alone


@dataclass(eq=False)
class Target:
    """One blob of a worker task: the places it is written to through passed descriptors, and
    the files the worker makes whole of it."""

    blob: WantedBlob
    passed: list[Place]  # in the order of task_blob.places
    made: list[Place]  # in the order of task_blob.new_files
    task_blob: TaskBlob

    @property
    def everywhere(self) -> list[Place]:
        """Its places in this task: what is done here when the worker could not."""
        return self.passed + self.made


def name_bytes(part: list[Place], modes: list[int | None]) -> int:
    """Bytes of the names of the places' files that a worker would make (mode not None)."""
    return sum(len(place.file.node.name) for place, mode in zip(part, modes, strict=True) if mode is not None)


@dataclass(eq=False)
class TaskBuilder:
    """A worker task being put together: its blobs, the descriptors it passes, its new files."""

    blobs: list[Target] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    positions: dict[FileWrite, int] = field(default_factory=dict)  # a file's descriptor's position
    directories: dict[int, int] = field(default_factory=dict)  # a directory descriptor's position
    new_files: list[NewFile] = field(default_factory=list)
    count: int = 0  # places
    name_bytes: int = 0  # of the new files' names: what makes a task's message long

    def descriptors_for(self, part: list[Place], modes: list[int | None]) -> int:
        """How many descriptors the task would pass anew for these places: a new file's directory
        once, any other file once (a file whose creation fails is counted all the same)."""
        needed: set[FileWrite | int | None] = set()
        for place, mode in zip(part, modes, strict=True):
            if mode is None:
                if place.file not in self.positions:
                    needed.add(place.file)
            elif place.file.here.fd not in self.directories:
                needed.add(place.file.here.fd)
        return len(needed)

    def new_file(self, file: FileWrite, mode: int) -> int:
        """Add a file the worker makes whole; its position among the task's new files."""
        here_fd = file.here.fd
        assert here_fd is not None
        directory = self.directories.get(here_fd)
        if directory is None:
            directory = self.directories[here_fd] = len(self.fds)
            self.fds.append(here_fd)
        node = file.node
        self.new_files.append(NewFile(directory, node.name, mode, node.atime_ns, node.mtime_ns))
        self.name_bytes += len(node.name)
        return len(self.new_files) - 1

    def build(self, path: str, digests: bool) -> tuple[Task, list[int], list[Target]]:
        blobs = [target.task_blob for target in self.blobs]
        return Task.spanning(path, digests, blobs, self.new_files), self.fds, self.blobs
