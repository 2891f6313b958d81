"""Where Shadowvault keeps what it may throw away: $SHADOWVAULT_CACHE_DIR, else
$XDG_CACHE_HOME/shadowvault, else ~/.cache/shadowvault. The S3 backend keeps remote objects there
(backend_s3_cache.py) and every repository its kept index (index_cache.py)."""

from __future__ import annotations

import os
from pathlib import Path

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
