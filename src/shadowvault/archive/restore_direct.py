"""The common file sent straight to the restore workers: one tuple per file instead of a batch's plan.

Most files of a tree are one blob, not hard-linked, without xattrs, owned and moded as creating
them makes them (`EntryWriter.create_mode`), in a directory this restore made. A content batch
plans such a file as it plans any (a FileWrite, a place per blob, a task built place by place, an
outcome), and with the workers decoding and writing, that bookkeeping made the restore's process
the limit: ~75 us of Python a file while the workers waited on it more than half the time (2 GiB /
100k files on 2 CPUs). A file like that is taken, as the walk meets it, into the DirectFiles being
gathered: up to DIRECT_FILES files of up to DIRECT_DIRS directories. Their blobs are looked up and
the files sent per pack as worker tasks of new files (`NewFile`: the worker creates, writes, times,
reads back and links each), a task holding the descriptors of the directories its files go to, and
the answers name only what went wrong.

Gathered across directories, a pack is read once for the files of every directory it holds: a
backup reads files of several directories at once, so a pack holds the files of ten or so
directories interleaved, and tasks made one directory at a time read each pack about ten times
(2 GiB / 100k files on 2 CPUs, cold: ~8,000 tasks, 11-15 s and 17-22 CPU s; gathered, ~800 tasks,
9-10 s and 15-16 CPU s).

Nothing is weaker than in a batch: a blob a worker could not read or verify, and every file of a
task no worker could do (a file it had made already is under its name and only counted), goes
through a content batch in this thread (`ContentBatch.run_here`: every copy of the blob tried, the
damage recorded, the file reported if none is good); a file the worker could not make is an error
of the result, as in a batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import Future
from typing import NamedTuple

from shadowvault.archive.pack_reads import PackedBlobs
from shadowvault.archive.restore_content import ContentBatch
from shadowvault.archive.restore_entries import EntryWriter, TargetDir, made_by_worker
from shadowvault.archive.restore_outcomes import Restored
from shadowvault.archive.restore_worker import NAME_BYTES_PER_TASK, PLACES_PER_TASK, NewFile, Task, TaskBlob
from shadowvault.archive.restore_workers import RestoreWorkers, WorkerGone
from shadowvault.cancellation import check
from shadowvault.repo.index import BlobLocation
from shadowvault.repo.tree import Node

log = logging.getLogger(__name__)

DIRECT_FILES = 2048  # files gathered before they are sent (the walk sends the rest when it waits)
DIRECT_DIRS = 32  # directories they may be in (each is held open until its files are done)


class DirectFile(NamedTuple):
    """A file a worker makes whole: its node, its path in the snapshot, the mode to create it with,
    and its directory (made by this restore)."""

    node: Node
    spath: bytes
    mode: int
    here: TargetDir


class _Sent(NamedTuple):
    """One worker task, the directories whose descriptors go with it (in the task's order), and per
    blob of it, the files it makes of that blob."""

    task: Task
    dirs: list[TargetDir]
    files: list[list[DirectFile]]


class DirectFiles:
    """Files of directories this restore made, made whole by the restore workers. `done` resolves
    once every file is restored or reported: the directories' metadata waits for it."""

    def __init__(self, store: PackedBlobs, entries: EntryWriter, *, verify: bool) -> None:
        self.store = store
        self.entries = entries
        self.verify = verify
        self.files: list[DirectFile] = []
        self.dirs: set[TargetDir] = set()
        self.planned_bytes = 0
        self.done: Future[Restored] = Future()

    def add(self, node: Node, spath: bytes, mode: int, here: TargetDir) -> bool:
        """Gather a file; True when it is the first of its directory here (its job waits on `done`)."""
        self.files.append(DirectFile(node, spath, mode, here))
        self.planned_bytes += node.size
        first = here not in self.dirs
        self.dirs.add(here)
        return first

    def full(self) -> bool:
        return len(self.files) >= DIRECT_FILES or len(self.dirs) >= DIRECT_DIRS

    def run(self, workers: RestoreWorkers | None) -> None:
        """Restore every file (in a pool thread): by the workers, else by a content batch here
        (every file, without workers: a restore too small for them). Cancelled, no further task
        is sent: a file is made whole by its task or not at all."""
        cancellation = self.entries.stats.cancellation
        check(cancellation)
        if workers is None:
            self._restore_here(self.files)
            return
        again: list[DirectFile] = []
        by_pack: dict[str, list[tuple[BlobLocation, DirectFile]]] = {}
        lookup = self.store.lookup
        for file in self.files:
            location = lookup(file.node.content[0])
            # not in the index (`load_blob` reloads it, or says what is missing), or not the size
            # the snapshot records (restored here, which says so): in this process
            if location is None or location.raw_length != file.node.size:
                again.append(file)
            else:
                by_pack.setdefault(location.pack, []).append((location, file))
        for pack, located in by_pack.items():
            path = workers.pack_path(pack)
            if path is None:
                again.extend(file for _, file in located)
                continue
            for sent in _tasks(path, located, self.verify, workers.fds_per_task):
                check(cancellation)
                again.extend(self._send(workers, sent))
        if again:
            self._restore_here(again)

    def _send(self, workers: RestoreWorkers, sent: _Sent) -> list[DirectFile]:
        """One task done by a worker; the files to restore here instead."""
        fds = [here.fd for here in sent.dirs if here.fd is not None]
        assert len(fds) == len(sent.dirs)  # open until `done`: their jobs wait on it
        try:
            answer = workers.run(sent.task, fds)
        except WorkerGone as err:
            log.debug("%s: its files are restored in this process", err)
            return self._count_made([f for files in sent.files for f in files])
        again: list[DirectFile] = []
        made: list[DirectFile] = []
        made_bytes = decoded = decoded_bytes = 0
        for blob, files, done in zip(sent.task.blobs, sent.files, answer, strict=True):
            if done.error:  # read again here: other copies, the damage recorded
                log.debug("a restore worker could not use blob %s: %s", blob.blob_id.hex()[:16], done.error)
                again.extend(files)
                continue
            decoded += 1
            decoded_bytes += blob.raw_length
            unmade = dict(done.unmade)
            for position, file in zip(blob.new_files, files, strict=True):
                why = unmade.get(position)
                if why is None:
                    made.append(file)
                    made_bytes += blob.raw_length
                else:
                    self.entries.error(file.spath, why)
        workers.on_decoded(decoded, decoded_bytes)
        self._made(made, made_bytes)
        return again

    def _count_made(self, files: list[DirectFile]) -> list[DirectFile]:
        """After a worker ended: the files it made (under their names) are counted; the others are
        returned, to be restored here."""
        left: list[DirectFile] = []
        made: list[DirectFile] = []
        for file in files:
            (made if made_by_worker(file.here, file.node.name) else left).append(file)
        self._made(made, sum(file.node.size for file in made))
        return left

    def _made(self, files: list[DirectFile], nbytes: int) -> None:
        """Files a worker made whole are under their names: count them and their bytes."""
        stats = self.entries.stats
        with stats.lock:
            stats.files += len(files)
            stats.bytes_written += nbytes
            stats.total_bytes += nbytes
            if self.verify:
                stats.verified += len(files)

    def _restore_here(self, files: list[DirectFile]) -> None:
        """Files no worker made, through a content batch in this thread (errors recorded by it)."""
        batch = ContentBatch(self.store, self.entries, verify=self.verify)
        for file in files:
            batch.add(file.node, file.spath, file.here)
        batch.run_here()


def _tasks(
    path: str, located: list[tuple[BlobLocation, DirectFile]], verify: bool, max_dirs: int
) -> Iterator[_Sent]:
    """The files of one pack as worker tasks: blobs in pack order, each once however many files
    are it, within PLACES_PER_TASK files, NAME_BYTES_PER_TASK of names and `max_dirs` directories
    a task."""
    located.sort(key=lambda item: item[0].offset)
    blobs: list[TaskBlob] = []
    files: list[list[DirectFile]] = []
    new_files: list[NewFile] = []
    dirs: dict[TargetDir, int] = {}  # a directory's descriptor's position in the task
    name_bytes = 0
    last_id = b""
    for location, file in located:
        node = file.node
        if new_files and (
            len(new_files) >= PLACES_PER_TASK
            or name_bytes + len(node.name) > NAME_BYTES_PER_TASK
            or (file.here not in dirs and len(dirs) >= max_dirs)
        ):
            yield _Sent(Task.spanning(path, verify, blobs, new_files), list(dirs), files)
            blobs, files, new_files, dirs, name_bytes, last_id = [], [], [], {}, 0, b""
        blob_id = node.content[0]
        if blob_id != last_id:  # a blob that several files are: decoded once
            blobs.append(TaskBlob.at(blob_id, location, [], []))
            files.append([])
            last_id = blob_id
        blobs[-1].new_files.append(len(new_files))
        files[-1].append(file)
        directory = dirs.setdefault(file.here, len(dirs))
        new_files.append(NewFile(directory, node.name, file.mode, node.atime_ns, node.mtime_ns))
        name_bytes += len(node.name)
    if new_files:
        yield _Sent(Task.spanning(path, verify, blobs, new_files), list(dirs), files)
