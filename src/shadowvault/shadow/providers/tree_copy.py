"""A copy-on-write copy of a directory tree (FICLONE), with every piece of POSIX metadata.

The reflink provider's engine: regular files are cloned on a few threads (the ioctl releases the
GIL), directories are made by the walking thread, hard links and directory metadata come last. A
`cancelled` event stops the copy within a few files (the coordinator's commit limit).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import threading
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger(__name__)

FICLONE = 0x40049409
XFS_ACL_DUPLICATES = ("trusted.SGI_ACL_FILE", "trusted.SGI_ACL_DEFAULT")
MAX_PROBLEMS = 20
CANCEL_CHECK_EVERY = 64  # entries between two looks at the cancel flag
CLONE_THREADS = 2
CLONE_BATCH = 32  # files per task


class CopyCancelled(Exception):
    """The coordinator gave up on this commit (its hard limit passed)."""


class TreeCopier:
    """Copies a directory tree with FICLONE and every piece of POSIX metadata.

    Directories are walked with an explicit stack (no recursion limit); a directory's own metadata
    is applied after its children exist, so its mode, default ACL and mtime end up as in the source.
    Entries that vanish while the live tree is walked are left out (the copy is not atomic anyway).
    """

    def __init__(
        self,
        source: str,
        target: str,
        *,
        skip: set[str] | frozenset[str] = frozenset(),
        xfs: bool = False,
        cancelled: threading.Event | None = None,
    ):
        self.source, self.target = source.rstrip("/") or "/", target
        self.cancelled = cancelled or threading.Event()
        self._failed = threading.Event()  # a worker thread failed: stop the walk
        self._creator = (os.geteuid(), os.getegid())
        self.skip = skip
        self.drop_xattrs = XFS_ACL_DUPLICATES if xfs else ()
        self.links: dict[tuple[int, int], str] = {}
        self.problems: list[str] = []
        self.files = 0
        self.directories = 0

    def run(self) -> None:
        """Walk the source, cloning regular files on a few threads (the syscalls release the GIL).

        Directories are made by the walking thread before anything goes into them; hard links
        and every directory's own metadata come last, when all files exist.
        """
        dirs: list[tuple[str, str, os.stat_result]] = []
        links: list[tuple[str, str]] = []
        pool = ThreadPoolExecutor(max_workers=CLONE_THREADS, thread_name_prefix="reflink")
        futures: list[Future] = []
        try:
            try:
                self._walk(dirs, links, pool, futures)
            except CopyCancelled:
                if self.cancelled.is_set() or not any(f.done() and f.exception() for f in futures):
                    raise
                # else a worker failed: its own error is raised just below
            for future in futures:
                future.result()
        except BaseException:
            self._failed.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        for first, dst in links:
            try:
                os.link(first, dst, follow_symlinks=False)
            except FileNotFoundError as err:
                if not os.path.lexists(first) and err.filename == first:
                    continue  # the first name vanished from the live volume
                raise
        for src, dst, st in reversed(dirs):
            self._apply_meta(src, dst, st)

    def _walk(
        self,
        dirs: list[tuple[str, str, os.stat_result]],
        links: list[tuple[str, str]],
        pool: ThreadPoolExecutor,
        futures: list[Future],
    ) -> None:
        batch: list[tuple[str, str, os.stat_result]] = []
        stack = [(self.source, self.target, os.lstat(self.source))]
        while stack:
            src, dst, st = stack.pop()
            dirs.append((src, dst, st))
            self.directories += 1
            try:
                with os.scandir(src) as it:
                    entries = list(it)
            except FileNotFoundError:
                continue
            for count, entry in enumerate(entries):
                if count % CANCEL_CHECK_EVERY == 0:
                    self._check_stop()
                if entry.path in self.skip:
                    continue
                try:
                    est = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                target = os.path.join(dst, entry.name)
                mode = est.st_mode
                if stat.S_ISDIR(mode):
                    os.mkdir(target, 0o700)
                    stack.append((entry.path, target, est))
                    continue
                self.files += 1
                if est.st_nlink > 1:
                    key = (est.st_dev, est.st_ino)
                    first = self.links.get(key)
                    if first is not None:
                        links.append((first, target))
                        continue
                    self.links[key] = target
                if stat.S_ISREG(mode):
                    batch.append((entry.path, target, est))
                    if len(batch) >= CLONE_BATCH:
                        futures.append(pool.submit(self._clone_batch, batch))
                        batch = []
                    continue
                try:
                    if stat.S_ISLNK(mode):
                        os.symlink(os.readlink(entry.path), target)
                    else:  # character/block devices, FIFOs, sockets
                        os.mknod(target, stat.S_IFMT(mode) | 0o600, est.st_rdev)
                except FileNotFoundError as err:
                    if err.filename == entry.path:
                        continue
                    raise
                self._apply_meta(entry.path, target, est)
        if batch:
            futures.append(pool.submit(self._clone_batch, batch))

    def _check_stop(self) -> None:
        if self.cancelled.is_set():
            raise CopyCancelled()
        if self._failed.is_set():
            raise CopyCancelled()  # a worker failed; its error is raised from its future

    def _clone_batch(self, batch: list[tuple[str, str, os.stat_result]]) -> None:
        try:
            for src, dst, st in batch:
                if self.cancelled.is_set() or self._failed.is_set():
                    return
                try:
                    self._clone_file(src, dst, st)
                except FileNotFoundError as err:
                    if err.filename != src:
                        raise
                    log.debug("vanished while copying: %s", src)
        except BaseException:
            self._failed.set()
            raise

    def _clone_file(self, src: str, dst: str, st: os.stat_result) -> None:
        try:
            sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOATIME)
        except PermissionError:
            sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                try:
                    fcntl.ioctl(dfd, FICLONE, sfd)
                except OSError as err:
                    if err.errno != errno.ETXTBSY:
                        err.filename = src
                        raise
                    self._problem(f"{src} was left out: it is in use as swap")
                    os.unlink(dst)
                    return
                self._apply_meta(sfd, dfd, st, label=src)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    def _problem(self, message: str) -> None:
        """Record something the copy could not preserve; the shadow's notes show the first few."""
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(message)
        elif len(self.problems) == MAX_PROBLEMS:
            self.problems.append("more files could not be copied exactly; see the log")
        log.warning("%s", message)

    def _apply_meta(self, src: str | int, dst: str | int, st: os.stat_result, label: str = "") -> None:
        """Owner, xattrs (ACLs), mode, times: in this order, because chown clears set-id bits and caps."""
        is_link = stat.S_ISLNK(st.st_mode)
        follow = not is_link
        if (st.st_uid, st.st_gid) != self._creator:  # new entries already belong to us
            os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=follow)
        self._copy_xattrs(src, dst, follow, label or str(src))
        if not is_link:
            os.chmod(dst, stat.S_IMODE(st.st_mode))
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=follow)

    def _copy_xattrs(self, src: str | int, dst: str | int, follow: bool, label: str) -> None:
        try:
            names = os.listxattr(src, follow_symlinks=follow)
        except OSError as err:
            if err.errno in (errno.EOPNOTSUPP, errno.ENODATA):
                return
            raise
        for name in names:
            if name in self.drop_xattrs:
                continue
            try:
                value = os.getxattr(src, name, follow_symlinks=follow)
                os.setxattr(dst, name, value, follow_symlinks=follow)
            except OSError as err:
                if err.errno == errno.ENODATA:
                    continue
                self._problem(f"xattr {name} of {label} was not copied: {err.strerror}")
