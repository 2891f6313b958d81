"""The locks of a set in the making: one per volume and one per application writer, machine-wide.

Two requesters whose sets share a volume or a writer are served one after the other (never two
freezes of one filesystem, never one application frozen twice at once); sets that share neither
are made side by side. The daemon's requests and in-process runs (CLI, exec, backup) take the
same locks: flock()ed files in `<state dir>/locks/`, held for the whole making of a set (identify
to post_snapshot).

- A volume's lock is named after its filesystem's device number (mountinfo's major:minor, the
  superblock), not its path: two mounts of one filesystem (btrfs subvolumes, bind mounts) freeze
  together, so they share a lock.
- A writer's lock is named after its label (`sqlite:/srv/app.db`, `script:NAME`, `ldap`), a path
  instance resolved. Filesystem freezers (fsfreeze) need none: what they freeze are the set's
  volumes, already locked.
- A set takes all its locks at once, after planning (which holds nothing), in one order shared by
  every process (sorted by file name), so two sets waiting for each other cannot deadlock.

Re-entrant within a process (store_lock), and a forked watchdog does not inherit them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator, Sequence

from shadowvault import paths
from shadowvault.errors import PermissionDeniedError
from shadowvault.shadow.events import WriterRun
from shadowvault.shadow.store_lock import lock_for
from shadowvault.shadow.volumes import Volume

LOCKS_DIR = "locks"


def volume_lock_name(volume: Volume) -> str:
    """The lock file of a volume: its filesystem's device number (its mount point if unknown)."""
    if volume.dev:
        return "volume-" + volume.dev.replace(":", "-") + ".lock"
    return f"volume-{_readable(volume.mount_point)}-{_digest(volume.mount_point)}.lock"


def writer_lock_name(run: WriterRun) -> str:
    """The lock file of a writer: its label, with a path instance resolved (one file, one lock)."""
    writer = run.writer
    instance = writer.instance
    if instance and instance.startswith("/"):
        instance = os.path.realpath(instance)
    identity = f"{writer.name}:{instance}" if instance else writer.name
    return f"writer-{_readable(identity)}-{_digest(identity)}.lock"


def lock_names(volumes: Sequence[Volume], runs: Sequence[WriterRun]) -> list[str]:
    """Every lock a set of `volumes` with `runs` takes, in the order every process takes them."""
    names = {volume_lock_name(v) for v in volumes}
    names.update(writer_lock_name(run) for run in runs if not run.is_filesystem_freezer)
    return sorted(names)


@contextlib.contextmanager
def set_locks(volumes: Sequence[Volume], runs: Sequence[WriterRun]) -> Iterator[None]:
    """Hold the locks of a set's volumes and writers (waits for the sets that share one of them)."""
    directory = paths.state_dir() / LOCKS_DIR
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except PermissionError as err:
        raise PermissionDeniedError(f"cannot create the lock directory {directory}: {err.strerror}") from err
    with contextlib.ExitStack() as held:
        for name in lock_names(volumes, runs):
            held.enter_context(lock_for(directory / name))
        yield


def _readable(text: str) -> str:
    """A short, file-name-safe hint of what a lock is for (the digest makes it unique)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-48:] or "_"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]
