"""The reflink provider: a FICLONE copy of the whole volume into `<mount>/.shadowvault/<set>-<index>`.

Each file's data is shared with the original (copy-on-write), so the copy costs metadata only. The
copy is NOT atomic across files: it is taken one file after another while writers hold their
applications, so writer-held data is consistent and everything else is only as consistent as a live
copy. The shadow says so (`atomic=False`).

Metadata is preserved: directories, symlinks, modes, owners, atime/mtime in ns, xattrs (with ACLs as
`system.posix_acl_*`; XFS's duplicate `trusted.SGI_ACL_*` forms are left to the filesystem), hard
links, device nodes, FIFOs and sockets. The hidden directory `.shadowvault` and other filesystems
mounted below the volume are skipped; btrfs subvolumes below it are copied (same filesystem).

Read-only-ness: the copy sits in `<mount>/.shadowvault`, mode 0700 and ours, so no other user can
reach it; root could still write into it (nothing enforces read-only for root, unlike a btrfs
read-only snapshot), which is why `shadows expose` gives readers a read-only bind mount.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import stat
import struct
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from shadowvault.errors import PermissionDeniedError, ProviderError, ShadowvaultError, UnsupportedError
from shadowvault.proc import pid_alive
from shadowvault.shadow.manifest import Shadow
from shadowvault.shadow.providers.base import IMAGE_NAME, FoundImage, FreezePolicy, Provider, image_name
from shadowvault.shadow.providers.hidden_dir import (
    check_reachable,
    drop_default_acl,
    ensure_shadow_dir,
    existing_shadow_dir,
    mounts_within,
    shadow_dir,
)
from shadowvault.shadow.volumes import Volume

log = logging.getLogger(__name__)

FICLONE = 0x40049409
XFS_IOC_FSGEOMETRY = 0x8100587E  # _IOR('X', 126, struct xfs_fsop_geom), 256 bytes
XFS_IOC_FSGEOMETRY_V4 = 0x8070587C  # _IOR('X', 124, struct xfs_fsop_geom_v4), 112 bytes
XFS_FSOP_GEOM_FLAGS_REFLINK = 1 << 20
_XFS_GEOM_FLAGS_OFFSET = 92

REFLINK_FSTYPES = ("xfs", "btrfs")
XFS_ACL_DUPLICATES = ("trusted.SGI_ACL_FILE", "trusted.SGI_ACL_DEFAULT")
MAX_PROBLEMS = 20
PARTIAL_MARK = ".partial-"
CANCEL_CHECK_EVERY = 64  # entries between two looks at the cancel flag
CLONE_THREADS = 2
CLONE_BATCH = 32  # files per task
BTRFS_SUBVOLUME_ROOT_INO = 256  # a btrfs subvolume's root: the btrfs provider's snapshot, not our copy


def xfs_has_reflink(mount_point: str) -> bool:
    """Whether the XFS at `mount_point` was made with reflink=1 (read-only geometry query, no write)."""
    fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for request, size in ((XFS_IOC_FSGEOMETRY, 256), (XFS_IOC_FSGEOMETRY_V4, 112)):
            buf = bytearray(size)
            try:
                fcntl.ioctl(fd, request, buf)
            except OSError as err:
                if err.errno in (errno.ENOTTY, errno.EINVAL):
                    continue
                raise
            (flags,) = struct.unpack_from("=I", buf, _XFS_GEOM_FLAGS_OFFSET)
            return bool(flags & XFS_FSOP_GEOM_FLAGS_REFLINK)
        return False
    finally:
        os.close(fd)


class CopyCancelled(Exception):
    """The coordinator gave up on this commit (its hard limit passed)."""


def _copy_error(volume: Volume, err: OSError) -> ShadowvaultError:
    where = f" ({err.filename})" if err.filename else ""
    if err.errno == errno.EPERM:
        return PermissionDeniedError(f"reflink copy of {volume.mount_point}: needs root{where}")
    if err.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL):
        return UnsupportedError(
            f"provider reflink cannot shadow {volume.mount_point}: FICLONE refused{where}"
        )
    return ProviderError(f"reflink copy of {volume.mount_point} failed: {err.strerror}{where}")


def sweep_partial_copies(parent: str) -> list[str]:
    """Remove copies left half-made in `parent` by a process that no longer runs; returns them."""
    swept = []
    for entry in os.scandir(parent):
        mark = entry.name.rfind(PARTIAL_MARK)
        if not entry.name.startswith(".") or mark < 0:
            continue
        pid = entry.name[mark + len(PARTIAL_MARK) :]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        log.info("removing %s, a copy its process (pid %s) left unfinished", entry.path, pid)
        shutil.rmtree(entry.path, ignore_errors=True)
        swept.append(entry.path)
    return swept


class ReflinkProvider(Provider):
    """A copy-on-write tree copy, for XFS (reflink=1) and btrfs."""

    name = "reflink"
    atomic = False
    freeze_policy = FreezePolicy.FORBIDS
    priority = 20

    def __init__(self) -> None:
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def unsupported_reason(self, volume: Volume) -> str | None:
        # Decided without writing anything: `volumes list` asks every volume of the machine.
        prefix = f"provider reflink cannot shadow {volume.mount_point}"
        if volume.fstype not in REFLINK_FSTYPES:
            return f"{prefix}: it is {volume.fstype}, which has no reflinks (only xfs and btrfs have)"
        if volume.read_only:
            return f"{prefix}: it is mounted read-only, so no copy can be placed on it"
        if volume.fstype == "xfs":
            try:
                if not xfs_has_reflink(volume.mount_point):
                    return f"{prefix}: this XFS was made without reflink (mkfs.xfs -m reflink=1)"
            except OSError as err:
                return f"{prefix}: cannot read its XFS geometry: {err.strerror}"
        return None

    def create(self, volume: Volume, set_id: str, index: int) -> Shadow:
        reason = self.unsupported_reason(volume)
        if reason:
            raise UnsupportedError(reason)
        parent = ensure_shadow_dir(volume)
        sweep_partial_copies(parent)
        name = image_name(set_id, index)
        target = os.path.join(parent, name)
        # Built under a name that says whose it is, renamed when whole: a copy interrupted by a
        # crash is recognisable and swept by the next create on this volume.
        partial = os.path.join(parent, f".{name}{PARTIAL_MARK}{os.getpid()}")
        skipped_mounts = [
            mp for mp in mounts_within(volume.mount_point) if mp != volume.mount_point.rstrip("/")
        ]
        skip = {shadow_dir(volume.mount_point), *skipped_mounts}
        if os.path.lexists(target):
            raise ProviderError(f"cannot create {target}: it exists already")
        try:
            os.mkdir(partial, 0o700)
        except OSError as err:
            raise ProviderError(f"cannot create {partial}: {err.strerror}") from err
        drop_default_acl(partial)
        copier = TreeCopier(
            volume.mount_point, partial, skip=skip, xfs=volume.fstype == "xfs", cancelled=self._cancelled
        )
        try:
            copier.run()
            os.rename(partial, target)
        except BaseException as err:
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(err, CopyCancelled):
                raise ProviderError(f"reflink copy of {volume.mount_point} was cancelled") from err
            if isinstance(err, OSError):
                raise _copy_error(volume, err) from err
            raise
        created = time.time()
        notes = []
        if skipped_mounts:
            notes.append(
                f"other filesystems mounted below {volume.mount_point} are not in its shadow: "
                + ", ".join(skipped_mounts)
            )
        notes.extend(copier.problems)
        return Shadow(
            volume=volume.mount_point,
            fs_uuid=volume.fs_uuid,
            fstype=volume.fstype,
            provider=self.name,
            path=target,
            atomic=False,
            created=created,
            provider_data={"directory": target, "files": copier.files, "directories": copier.directories},
            notes=notes,
        )

    def planned(self, volume: Volume, set_id: str, index: int) -> Shadow:
        return self._shadow_at(
            volume, os.path.join(shadow_dir(volume.mount_point), image_name(set_id, index))
        )

    def _shadow_at(self, volume: Volume, directory: str) -> Shadow:
        return Shadow(
            volume=volume.mount_point,
            fs_uuid=volume.fs_uuid,
            fstype=volume.fstype,
            provider=self.name,
            path=directory,
            atomic=False,
            provider_data={"directory": directory},
        )

    def found_images(self, volume: Volume) -> list[FoundImage]:
        """Copies named `<set id>-<index>` in `<mount>/.shadowvault`, and half-made ones of ended processes.

        A btrfs subvolume there is the btrfs provider's snapshot, not a copy: left to that provider.
        """
        if volume.fstype not in REFLINK_FSTYPES:
            return []
        parent = existing_shadow_dir(volume.mount_point)
        if parent is None:
            return []
        found = []
        for entry in os.scandir(parent):
            name = entry.name
            mark = name.rfind(PARTIAL_MARK)
            if name.startswith(".") and mark > 0:  # `.<set id>-<index>.partial-<pid>`
                pid = name[mark + len(PARTIAL_MARK) :]
                if not pid.isdigit() or pid_alive(int(pid)):
                    continue
                name = name[1:mark]
            match = IMAGE_NAME.match(name)
            if match is None:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            if volume.fstype == "btrfs" and st.st_ino == BTRFS_SUBVOLUME_ROOT_INO:
                continue
            found.append(FoundImage(match["set_id"], self._shadow_at(volume, entry.path)))
        return found

    def delete(self, shadow: Shadow) -> None:
        target = shadow.provider_data.get("directory") or shadow.path
        check_reachable(shadow, os.path.dirname(target))
        if not os.path.lexists(target):
            return
        busy = mounts_within(target)
        if busy:
            raise ProviderError(f"cannot delete {target}: {busy[0]} is mounted there; unexpose it first")
        try:
            shutil.rmtree(target)
        except FileNotFoundError:
            return
        except OSError as err:
            raise ProviderError(f"cannot delete reflink copy {target}: {err.strerror}") from err


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
