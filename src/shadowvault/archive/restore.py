"""Lay a snapshot's tree back down: content, owners, modes, times, ACLs, xattrs, links, devices, holes.

The main thread walks the snapshot's trees and opens the target's directories; entries are laid
down by a pool of threads (`restore_entries`), files in batches of up to a thousand whose
blobs are read with each pack read once, in one ranged read (`restore_content`). Directories get
their metadata after their contents, in the order the walk left them (`restore_dirs`: a read-only
directory is filled first, and a default ACL is applied after the files were created with their
own ACLs).

A snapshot is untrusted input (anyone with the password can write one), and so is the target (a
symlink can be planted in it). Nothing is ever reached through a path string: the target is opened
once, every directory below it is opened relative to its parent with O_NOFOLLOW, and every entry is
created, renamed, linked and given its metadata relative to those descriptors. An entry whose name
is not a single component (`..`, `a/b`, empty, NUL, a name twice in one directory) is an error of
the result, never a path. At most MAX_OPEN_DIRS directories are held open at once (`restore_dirs`).

A blob that fails verification fails only the files that need it: they are reported, the rest is
restored. Every failure in a worker thread, foreseen or not, ends up in `RestoreStats.errors` with
its path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from shadowvault.archive.pack_reads import PackedBlobs, ReadBudget
from shadowvault.archive.patterns import PathFilter
from shadowvault.archive.restore_content import ContentBatch
from shadowvault.archive.restore_direct import DirectFiles
from shadowvault.archive.restore_dirs import DirJob, OpenDirs
from shadowvault.archive.restore_entries import (
    EntryWriter,
    Overwrite,
    RestoreStats,
    TargetDir,
    created_gid,
    discard,
    has_default_acl,
    join,
    reason,
    unsafe_path,
)
from shadowvault.archive.restore_links import LinkGroup, LinkKey, differs, link_key, mismatch_warning
from shadowvault.archive.restore_outcomes import Pending, Restored, chain
from shadowvault.archive.restore_places import TargetPlaces, top_of
from shadowvault.archive.restore_reads import NAME_MAX
from shadowvault.archive.restore_workers import LazyRestoreWorkers
from shadowvault.archive.tree_paths import TreeReader, find_node, raw_path, text
from shadowvault.cancellation import check
from shadowvault.errors import NotFoundError, RepositoryError, UsageError
from shadowvault.repo.repository import Repository
from shadowvault.repo.tree import Node, duplicate_names, invalid_name
from shadowvault.slots import Slots

__all__ = ["Overwrite", "RestoreSource", "RestoreStats", "Restorer", "find_node"]

log = logging.getLogger(__name__)

BATCHES_AT_ONCE = 2  # content batches being restored while the walk plans the next one


def default_workers(store: PackedBlobs) -> int:
    """Threads that read, decrypt and write: one for a repository on local storage, a few for a
    remote one (whose reads wait on the network).

    Python threads share one GIL, and writing files is many short calls that release and retake
    it: a second thread only queues for it (1 GiB / 50k files on 2 CPUs, local repository: 1 worker
    5.9 s wall and CPU, 2 workers 6.6-7.8 s wall and 8-9.4 s CPU, 8 workers ~10 s CPU)."""
    if not store.reads_wait_on_network:
        return 1
    return min(4, max(2, os.cpu_count() or 2))


class RestoreSource(PackedBlobs, TreeReader, Protocol):
    """What a restore reads: trees, and blobs grouped by pack."""


if TYPE_CHECKING:  # mypy proves the repository is a restore source; nothing runs

    def _repository_is_a_restore_source(repo: Repository) -> RestoreSource:
        return repo


@dataclass
class _Frame:
    """A directory being walked: its job, the entries not visited yet, the names it holds twice."""

    job: DirJob
    nodes: Iterator[Node]
    twice: set[bytes]


class Restorer:
    """Restores a snapshot tree (or part of it) into a target directory."""

    def __init__(
        self,
        store: RestoreSource,
        target: str | bytes | os.PathLike[str],
        *,
        path_filter: PathFilter | None = None,
        overwrite: Overwrite | str = Overwrite.NEVER,
        verify: bool = False,
        numeric_owner: bool = False,
        workers: int | None = None,
        processes: int | None = None,
        max_files: int = 64,
        stats: RestoreStats | None = None,
    ):
        self.store = store
        self.target = os.fsencode(target)
        self.filter = path_filter or PathFilter()
        self._everything = not self.filter.includes and not self.filter.excludes  # no path to match
        self.overwrite = Overwrite(overwrite)
        self.verify = verify
        self.stats = stats or RestoreStats()
        # worker processes decode and write pack ranges (restore_workers.py); a thread waits on each
        local = store if isinstance(store, Repository) and store.packs_are_local_files else None
        self.processes = LazyRestoreWorkers(local, processes)
        workers = workers or max(default_workers(store), self.processes.threads)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="sv-restore")
        # batches are driven from threads of their own: they wait on the pool, which never waits
        self.batches = ThreadPoolExecutor(BATCHES_AT_ONCE, thread_name_prefix="sv-restore-batch")
        self._batch_slots = Slots(BATCHES_AT_ONCE)  # Ctrl-C cannot wedge these (shadowvault/slots.py)
        self._read_budget = ReadBudget()  # pack ranges held at once, by all batches together
        self.slots = Slots(max_files)  # entries other than batched files
        self._links: dict[LinkKey, LinkGroup] = {}  # the first name of each hard-linked inode met
        self._root = TargetDir(None, b"", b"/", None)
        self.entries = EntryWriter(
            self._root, self.stats, overwrite=self.overwrite, numeric_owner=numeric_owner
        )
        self.dirs = OpenDirs(self._root, self.entries, self.overwrite, self._flush)  # restore_dirs.py
        self._batch = self._new_batch()
        self._direct: DirectFiles | None = None  # files gathered for the workers (restore_direct.py)

    def restore(self, root_tree: bytes, subpath: str | bytes = "/") -> RestoreStats:
        """Restore the snapshot below `subpath` into the target (the whole snapshot keeps its full paths)."""
        if os.path.lexists(self.target) and not os.path.isdir(self.target):
            raise UsageError(f"{text(self.target)} exists and is not a directory")
        node = find_node(self.store, root_tree, subpath)
        root = self._root
        root.spath = b"/" + b"/".join(p for p in raw_path(subpath).split(b"/") if p)
        top = top_of(root.spath, is_dir=node is None or node.type == "dir")
        self.stats.places = TargetPlaces(self.target, top)  # what the report names
        try:
            os.makedirs(self.target, exist_ok=True)
            root.fd = os.open(self.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the user's own path
        except OSError as err:  # a file where a parent should be, a read-only file system, a name too long
            raise UsageError(f"cannot restore into {text(self.target)}: {err.strerror or err}") from err
        self.dirs.open.add(root)
        root.inherits_acl = has_default_acl(root.fd)
        root.new_gid = created_gid(root.fd)
        try:
            if node is None:
                self._walk(root_tree, root)
            elif node.type == "dir":
                self._walk(node.subtree, root)
            else:
                job = DirJob(root)
                self._submit_entry(node, root.spath, root, job)
                self.dirs.finished.append(job)
            self.dirs.drain(block=True)
            check(self.stats.cancellation)  # cancelled as the last files were done: still cancelled
        except BaseException:
            self.pool.shutdown(wait=False, cancel_futures=True)  # interrupted: drop the queued files
            raise
        finally:
            self.batches.shutdown(wait=True)
            self.pool.shutdown(wait=True)
            self.processes.shutdown()
            for left in list(self.dirs.open):
                self.dirs.close(left)
        return self.stats

    # -- walking (main thread) ---------------------------------------------------------------------

    def _walk(self, tree_id: bytes | None, top: TargetDir) -> None:
        """Depth first with a stack of its own (a crafted tree can be deeper than Python's recursion
        limit); a directory's job is queued when its last entry was visited, so jobs come in post-order."""
        stack = [self._frame(tree_id, top)]
        dirs = self.dirs
        cancellation = self.stats.cancellation
        while stack:
            check(cancellation)
            frame = stack[-1]
            node = next(frame.nodes, None)
            if node is None:
                stack.pop()
                dirs.finished.append(frame.job)
                dirs.drain(block=False)
            elif (below := self._visit(node, frame)) is not None:
                stack.append(below)

    def _frame(self, tree_id: bytes | None, here: TargetDir) -> _Frame:
        nodes: list[Node] = []
        if tree_id is not None:
            try:
                nodes = self.store.load_tree(tree_id).nodes
            except (RepositoryError, NotFoundError) as err:
                self.entries.error(here.spath, f"directory listing unreadable: {err}")
        return _Frame(DirJob(here), iter(nodes), duplicate_names(nodes))

    def _visit(self, node: Node, frame: _Frame) -> _Frame | None:
        """Submit one entry of a directory; for a subdirectory to walk, its frame."""
        here = frame.job.dir
        spath = join(here.spath, node.name)
        why = invalid_name(node.name)
        if why is None and node.name in frame.twice:
            why = "the name appears more than once in its directory"
        if why is not None:
            if self.filter.included(spath) or self.filter.may_contain(spath):
                self.entries.error(unsafe_path(here.spath, node.name), f"not restored: unsafe name ({why})")
            return None
        if node.type != "dir":
            if (self._everything or self.filter.included(spath)) and (
                here.fd is not None or self.dirs.ensure(here)
            ):
                self._submit_entry(node, spath, here, frame.job)
            return None
        selected = self._everything or self.filter.included(spath)
        if not selected and not self.filter.may_contain(spath):
            return None
        below = TargetDir(here, node.name, spath, node, (*here.rel, node.name))
        if selected and not self.dirs.ensure(below):
            return None
        if selected and node.error is not None:
            self.entries.warning(spath, f"restored empty: it could not be listed at backup ({node.error})")
        return self._frame(node.subtree, below)

    # -- scheduling entries (main thread) ----------------------------------------------------------

    def _new_batch(self) -> ContentBatch:
        return ContentBatch(self.store, self.entries, verify=self.verify, budget=self._read_budget)

    def _submit_entry(self, node: Node, spath: bytes, here: TargetDir, job: DirJob) -> None:
        """A file joins the batch being planned; a hard link waits for its first path (without
        holding a worker); anything else goes to the pool."""
        key = self._link_key(node, spath)
        group = self._links.get(key) if key is not None else None
        first = group.pending if group is not None else None
        fut: Pending
        if key is None and (mode := self._direct_mode(node, here)) is not None:
            if self._direct is None:
                self._direct = DirectFiles(self.store, self.entries, verify=self.verify)
            if self._direct.add(node, spath, mode, here):
                job.entries.append((self._direct.done, here.spath))
            if self._direct.full():
                self._send_direct()
            return
        if first is None and node.type == "file":
            fut = self._batch.add(node, spath, here)
            if self._batch.full():
                self._flush()
        elif first is not None and not first.done():
            if self._batch.holds(first):
                self._flush()
            later: Future[Restored] = Future()
            fut = later
            first.add_done_callback(lambda _f: self._submit_later(later, node, spath, here, first))
        else:
            fut = self._submit_now(node, spath, here, first)
        if key is not None and group is None:
            self._links[key] = LinkGroup(node, spath, fut)
        job.entries.append((fut, spath))

    def _link_key(self, node: Node, spath: bytes) -> LinkKey | None:
        """The inode `node` shares with its other names; None lays it down on its own: not
        hard-linked, or not what its inode's first name is (a crafted tree, `restore_links.py`),
        which a warning says."""
        key = link_key(node)
        group = self._links.get(key) if key is not None else None
        if group is None:
            return key
        why = differs(group.node, node)
        if why is None:
            return key
        self.entries.warning(spath, mismatch_warning(group, why))
        return None

    def _direct_mode(self, node: Node, here: TargetDir) -> int | None:
        """The mode to create the file with when a restore worker can make it whole from one blob
        (restore_direct.py): new in a directory this restore made, no xattrs, no holes, and creating
        it gives it its owner and mode. None for any other entry, or without workers."""
        if not (
            node.type == "file"
            and here.fresh
            and self.processes.processes
            and self.entries.tmpfile
            and len(node.content) == 1
            and node.error is None
            and not node.xattrs
            and not node.sparse
            and len(node.name) <= NAME_MAX
            and self.store.zero_blobs.size_of(node.content[0]) is None
        ):
            return None
        mode, complete = self.entries.create_mode(node, here)
        return mode if complete else None

    def _send_direct(self) -> None:
        """Hand the gathered files to the pool, which has the workers make them (without workers,
        a restore too small for them, a pool thread restores them); their directories' jobs wait
        on `done`."""
        direct, self._direct = self._direct, None
        if direct is None:
            return
        workers = self.processes.started or self.processes.for_batch(len(direct.files), direct.planned_bytes)
        chain(self.pool.submit(direct.run, workers), direct.done)

    def _submit_now(
        self, node: Node, spath: bytes, here: TargetDir, first: Pending | None
    ) -> Future[Restored]:
        self.slots.acquire()
        try:
            fut = self.pool.submit(self._entry_task, node, spath, here, first)
        except BaseException:
            self.slots.release()
            raise
        fut.add_done_callback(lambda _f: self.slots.release())
        return fut

    def _submit_later(
        self, fut: Future[Restored], node: Node, spath: bytes, here: TargetDir, first: Pending
    ) -> None:
        """Called when a hard link's first path is done (in the thread that finished it)."""
        try:
            inner = self.pool.submit(self._entry_task, node, spath, here, first)
        except RuntimeError:  # the pool is shut down: the restore was interrupted
            fut.cancel()
            return
        chain(inner, fut)

    def _flush(self) -> None:
        """Hand the files gathered for the workers to the pool, and the batch being planned to a
        batch thread (waiting while BATCHES_AT_ONCE run): whatever waits for a directory after
        this waits for work under way."""
        self._send_direct()
        batch = self._batch
        if not batch.files:
            return
        self._batch = self._new_batch()
        self._batch_slots.acquire()
        try:
            self.batches.submit(self._run_batch, batch)
        except BaseException:
            self._batch_slots.release()
            raise

    def _run_batch(self, batch: ContentBatch) -> None:
        try:
            batch.workers = self.processes.for_batch(len(batch.files), batch.planned_bytes)
            batch.run(self.pool)
        except BaseException:
            log.debug("a restore batch was interrupted", exc_info=True)
        finally:
            self._batch_slots.release()

    # -- entries other than batched files (worker threads) -----------------------------------------

    def _entry_task(self, node: Node, spath: bytes, here: TargetDir, first: Pending | None) -> Restored:
        """A worker's job: whatever goes wrong is an error of the result that names the path."""
        try:
            return self._lay_down(node, spath, here, first)
        except Exception as err:
            log.debug("restoring %s failed", text(spath), exc_info=True)
            self.entries.error(spath, reason(err))
            return None

    def _lay_down(self, node: Node, spath: bytes, here: TargetDir, first_done: Pending | None) -> Restored:
        """Restore one entry: a link to its first path, a special file, or a file on its own (a hard
        link whose first path was not restored)."""
        assert here.fd is not None
        first = first_done.result() if first_done is not None else None  # done: never waits
        if first is None and node.type == "file":
            alone = self._new_batch()
            fut = alone.add(node, spath, here)
            alone.run_here()
            return fut.result()
        if not self.entries.wanted(node, spath, here):
            return None
        tmp = self.entries.new_tmp()
        try:
            if first is not None:
                self.entries.link(first, here, tmp, node)
            else:
                self.entries.make_special(node, here, tmp)
            os.rename(tmp, node.name, src_dir_fd=here.fd, dst_dir_fd=here.fd)
        except Exception as err:
            discard(here.fd, tmp)
            self.entries.error(spath, reason(err))
            return None
        except BaseException:
            discard(here.fd, tmp)
            raise
        if first is not None:
            self._linked_is_verified(node)
        return self.entries.restored(node, here)

    def _linked_is_verified(self, node: Node) -> None:
        """Under `--verify` a file linked to its first name is verified too: it is the inode read
        back through that name, checked a regular file when linked (`EntryWriter.link`), and its
        tree gives it that content (`restore_links.differs`). Counted, never passed over."""
        if self.verify and node.type == "file":
            with self.stats.lock:
                self.stats.verified += 1
