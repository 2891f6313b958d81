"""Which filesystems Shadowvault may freeze: asked before anything is frozen, by whoever will freeze.

A frozen filesystem blocks every write to it, ours too: freezing the one that holds our state,
configuration, interpreter or log would leave us unable to thaw it. The fsfreeze writer and the
providers that freeze a volume themselves (FreezePolicy.NEEDS) share these rules; they live here,
beside both, so that providers need not import a writer.
"""

from __future__ import annotations

import logging
import os
import sys

from shadowvault import paths
from shadowvault.errors import UsageError
from shadowvault.shadow.volumes import Volume, list_volumes, volume_of


def _existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path) and path != "/":
        path = os.path.dirname(path)
    return path


def _log_files() -> list[str]:
    """Files our logging or our stdout/stderr write to (a write there while frozen deadlocks us)."""
    found = []
    for handler in logging.getLogger().handlers + logging.getLogger("shadowvault").handlers:
        if isinstance(handler, logging.FileHandler):
            found.append(handler.baseFilename)
    for fd in (1, 2):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/") and os.path.isfile(target):
            found.append(target)
    return found


def protected_paths() -> dict[str, str]:
    """What must stay writable while we hold a freeze: path -> what it is, in words."""
    protected = {
        "/": "the root filesystem",
        _existing_ancestor(str(paths.state_dir())): "the state directory",
        _existing_ancestor(str(paths.config_dir())): "the configuration directory",
        sys.executable: "the running Python interpreter",
        sys.prefix: "the running Python environment",
    }
    for path in _log_files():
        protected.setdefault(path, "our log or output file")
    return protected


def check_may_freeze(volume: Volume, volumes: list[Volume] | None = None) -> None:
    """Raise UsageError when freezing `volume` would freeze something we need to keep writing."""
    volumes = volumes if volumes is not None else list_volumes(with_uuid=False)
    for path, what in protected_paths().items():
        try:
            holder = volume_of(path, volumes)
        except Exception:  # a vanished path cannot deadlock us
            continue
        if holder.dev and volume.dev:
            same_fs = holder.dev == volume.dev
        else:
            same_fs = holder.mount_point == volume.mount_point
        if same_fs:
            raise UsageError(
                f"refusing to freeze {volume.mount_point}: it holds {what} ({path}), and freezing it "
                "would block Shadowvault itself"
            )
