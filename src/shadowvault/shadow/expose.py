"""Exposing a shadow: a read-only bind mount of its image at a directory the user names.

The bind is made in two steps (`mount --bind`, then `remount,ro,bind`) because a bind mount takes
the flags of its source until it is remounted; if the second step fails the first is undone.
"""

from __future__ import annotations

import logging
import os

from shadowvault import proc
from shadowvault.errors import CommandError, ProviderError
from shadowvault.shadow.volumes import list_volumes

log = logging.getLogger(__name__)


def is_mount_point(path: str) -> bool:
    """Whether `path` is in the mount table (st_dev comparison would call btrfs subvolumes mounts)."""
    path = os.path.realpath(path)
    return any(v.mount_point == path for v in list_volumes(with_uuid=False))


def bind_readonly(source: str, at: str) -> None:
    """Mount `source` read-only at `at`."""
    proc.run(["mount", "--bind", source, at], timeout=30)
    try:
        proc.run(["mount", "-o", "remount,ro,bind", at], timeout=30)
    except CommandError:
        proc.run(["umount", at], timeout=30, check=False)
        raise


def unmount(at: str) -> None:
    """Unmount the exposure at `at`; a busy mount is an error naming the path, never a lazy unmount."""
    if not is_mount_point(at):
        log.info("%s is not mounted any more", at)
        return
    done = proc.run(["umount", at], timeout=30, check=False)
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        reason = detail[-1] if detail else f"umount exit status {done.returncode}"
        if "busy" in reason:
            reason = "it is busy (a process has a file or directory open there)"
        raise ProviderError(f"cannot unexpose {at}: {reason}")
