"""Mount the view and serve it in the foreground until it is unmounted.

libfuse runs the request loop on threads of its own (Python callbacks through mfusepy) and stops
it on SIGINT, SIGTERM or SIGHUP, or when `fusermount -u` takes the mount away; in every case it
unmounts before `FUSE()` returns. It installs its handlers only for signals left at their default,
so Python's handlers (shadowvault.interrupts) step aside while the mount is served.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from shadowvault.errors import ShadowvaultError, UnsupportedError, UsageError
from shadowvault.mount.catalog import Catalog, SnapshotFilter
from shadowvault.mount.content import Blobs
from shadowvault.mount.trees import TreeCache
from shadowvault.paths_within import is_within
from shadowvault.repo.backend_local import LocalBackend
from shadowvault.repo.repository import Repository

log = logging.getLogger(__name__)

FUSE_DEVICE = "/dev/fuse"
IDLE_THREADS = 10  # request threads kept waiting (more start when readers queue up)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class MountOptions:
    allow_other: bool = False  # other users may enter (the stored owners and modes still apply)
    refresh_seconds: float = 5.0  # the snapshot list is re-read at most this often
    shown: SnapshotFilter = field(default_factory=SnapshotFilter)  # which snapshots appear


def check_mountpoint(mountpoint: str, repository: Path | None = None) -> None:
    """A mount point the view can use. `repository`, a local repository's directory, must not be at
    or below it: the view would hide the repository from itself (every read failed with EIO)."""
    if not os.path.isdir(mountpoint):
        raise UsageError(f"{mountpoint}: the mount point must be an existing directory")
    if repository is not None and is_within(os.path.realpath(repository), os.path.realpath(mountpoint)):
        raise UsageError(
            f"{mountpoint}: a view mounted there would hide the repository it shows ({repository}):"
            " choose another mount point"
        )
    if not os.path.exists(FUSE_DEVICE):
        raise UnsupportedError(f"FUSE is not available here: {FUSE_DEVICE} is missing (modprobe fuse)")


@contextmanager
def _signals_to_libfuse() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # only the main thread has them
        yield
        return
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _prefer_libfuse3() -> None:
    """Load libfuse 3 where it is installed: mfusepy looks for libfuse 2 first, which many machines
    also have (for older programs), and the view wants libfuse 3's threads and options. An explicit
    FUSE_LIBRARY_PATH or FUSE_LIBRARY_NAME (mfusepy's own settings) is left as given."""
    if os.environ.get("FUSE_LIBRARY_PATH") or os.environ.get("FUSE_LIBRARY_NAME"):
        return
    found = ctypes.util.find_library("fuse3")
    if found:
        os.environ["FUSE_LIBRARY_PATH"] = found


def serve(
    repo: Repository,
    mountpoint: str,
    options: MountOptions,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Mount the repository's snapshots read-only at `mountpoint`; return once it is unmounted."""
    check_mountpoint(mountpoint, repo.backend.root if isinstance(repo.backend, LocalBackend) else None)
    _prefer_libfuse3()
    try:
        import mfusepy

        from shadowvault.mount.filesystem import SnapshotFs
    except OSError as err:  # mfusepy loads libfuse when imported
        raise UnsupportedError(f"FUSE is not available here: {err} (install the fuse3 package)") from err

    def ready() -> None:
        if options.allow_other and not view.acls_enforced:
            log.warning("this FUSE cannot check POSIX ACLs: other users are judged by the stored modes alone")
        if on_ready is not None:
            on_ready()

    view = SnapshotFs(
        Catalog(repo, options.refresh_seconds, shown=options.shown), TreeCache(repo), Blobs(repo), ready
    )
    with _signals_to_libfuse():
        try:
            mfusepy.FUSE(
                view,
                mountpoint,
                foreground=True,
                ro=True,
                nodev=True,
                nosuid=True,
                default_permissions=True,
                use_ino=True,
                kernel_cache=True,  # a snapshot never changes: pages read once stay cached across opens
                # libfuse 3.14 warns about its own default ("unlimited") unless a number is given;
                # libfuse 2 does not know the option
                **({"max_idle_threads": IDLE_THREADS} if mfusepy.fuse_version_major == 3 else {}),
                allow_other=options.allow_other,
                fsname="shadowvault",
                subtype="shadowvault",
            )
        except RuntimeError as err:
            # libfuse's loop returns the signal that stopped it as an error (fuse_main_real: 8)
            if not view.mounted:
                raise ShadowvaultError(f"could not mount at {mountpoint} (libfuse said why above)") from err
            log.debug("the request loop ended with %s", err)
    log.info("unmounted %s", mountpoint)
