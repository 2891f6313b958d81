"""Where Shadowvault keeps what it may throw away: $SHADOWVAULT_CACHE_DIR, else
$XDG_CACHE_HOME/shadowvault, else ~/.cache/shadowvault. The S3 backend keeps remote objects there
(backend_s3_cache.py) and every repository its kept index (index_cache.py)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from shadowvault.errors import RepositoryError

CACHE_DIR_ENV = "SHADOWVAULT_CACHE_DIR"


def default_cache_root() -> Path:
    """$SHADOWVAULT_CACHE_DIR, else $XDG_CACHE_HOME/shadowvault, else ~/.cache/shadowvault."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "shadowvault"


def private_dir(path: Path) -> None:
    """Make `path` (and its parent, the repository's cache directory) 0700: the cache holds key
    files, wrapped by the password, and the index, but still nobody else's business."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for directory in (path.parent, path):
        os.chmod(directory, 0o700)


def scratch_error(err: OSError, directory: Path) -> RepositoryError:
    """An OSError of the local directory in the cache where packs for remote storage are built
    before they are uploaded: that disk, not the repository, is what is full or cannot be written,
    and `prune` (what storage_error advises) frees nothing there."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        why = f"is full: free space there or set {CACHE_DIR_ENV} to another directory"
    else:
        why = f"cannot be written ({err.strerror or err}): set {CACHE_DIR_ENV} to a directory you can write"
    return RepositoryError(f"{directory}, where packs are built before they are uploaded, {why}")
