"""Where a recovered Samba DC is made: a staging directory next to its target, renamed into place.

An interrupted recovery must never leave a half-made DC (with an smb.conf that would start) under
the DC's final name, and a rerun must not be blocked by what it left: the DC is built in
`.NAME.shadowvault-partial` beside the target, flushed, and renamed onto it; a leftover staging
directory is removed by the next run, and a lock beside the target keeps two recoveries apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator

from shadowvault import proc
from shadowvault.errors import UsageError, WriterError
from shadowvault.fsutil import fsync_dir

log = logging.getLogger(__name__)

STAGING_SUFFIX = ".shadowvault-partial"
LOCK_SUFFIX = ".shadowvault-lock"
SYNC_TIMEOUT = 3600.0


def require_empty(targetdir: str) -> None:
    if os.path.exists(targetdir) and (not os.path.isdir(targetdir) or os.listdir(targetdir)):
        raise UsageError(f"{targetdir} is not empty: a DC is recovered into an empty directory")


def require_target(targetdir: str) -> None:
    """Refuse, before any work, a target the recovered DC could not be renamed onto: one that holds
    something, or a mount point (a rename never replaces one: it would fail at the very end)."""
    require_empty(targetdir)
    if os.path.ismount(targetdir):
        raise UsageError(
            f"{targetdir} is a mount point: a recovered DC is made beside its directory and renamed onto "
            "it, which a mount point cannot take; unmount it and recover, then move the DC's files onto "
            "that filesystem"
        )


def _beside(targetdir: str, suffix: str) -> str:
    """`.NAME<suffix>` in the directory holding `targetdir` (hidden, and on the same filesystem)."""
    parent, name = os.path.split(os.path.abspath(targetdir).rstrip("/"))
    return os.path.join(parent, f".{name}{suffix}")


def staging_dir(targetdir: str) -> str:
    """Where a DC bound for `targetdir` is made: next to it (same filesystem, so a rename moves it)."""
    return _beside(targetdir, STAGING_SUFFIX)


@contextlib.contextmanager
def staged(targetdir: str) -> Iterator[str]:
    """A fresh staging directory for `targetdir`, renamed onto it when the block succeeds.

    A leftover of an interrupted run is removed first; on a failure the staging directory goes and
    `targetdir` is untouched, so there is never a half-made DC under the final name.
    """
    require_target(targetdir)
    staging = staging_dir(targetdir)
    os.makedirs(os.path.dirname(staging), exist_ok=True)
    with recovery_lock(targetdir):
        yield from _staged_locked(targetdir, staging)


@contextlib.contextmanager
def recovery_lock(targetdir: str) -> Iterator[None]:
    """Held for a whole recovery into `targetdir`: a second one would remove the first one's staging
    directory (as an interrupted run's leftover) and both would rename onto the target. flock on a
    file next to the target; it goes away with the kernel's lock if the holder is killed, and its
    name is removed when the recovery ends (a run that locked the name's old file tries again)."""
    path = _beside(targetdir, LOCK_SUFFIX)
    fd = _locked(path, targetdir)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # still locked: whoever opens the name now makes a new file
        os.close(fd)


def _locked(path: str, targetdir: str) -> int:
    """An exclusive flock on the file now named `path`, or UsageError if another recovery holds it."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise WriterError(f"cannot lock {path} for the recovery into {targetdir}: {err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(
                f"another recovery into {targetdir} is running (it holds {path}): wait for it to end"
            ) from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed this file as it ended: lock the name's new one


def _staged_locked(targetdir: str, staging: str) -> Iterator[str]:
    if os.path.isdir(staging) and not os.path.islink(staging):
        log.info("removing %s, left by an interrupted recovery", staging)
        shutil.rmtree(staging)
    elif os.path.lexists(staging):
        os.unlink(staging)
    os.mkdir(staging, 0o755)
    try:
        yield staging
        proc.run(["sync", "-f", staging], timeout=SYNC_TIMEOUT)  # the DC's files are on disk before its name
        require_empty(targetdir)
        try:
            os.rename(staging, targetdir)  # replaces an empty directory
        except OSError as err:
            raise WriterError(f"cannot move the recovered DC from {staging} to {targetdir}: {err}") from err
        fsync_dir(os.path.dirname(staging))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
