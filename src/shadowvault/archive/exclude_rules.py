"""Exclude rules that need more than a path: a size limit, and cache directories (CACHEDIR.TAG).

Glob excludes are `patterns.PathFilter`; these look at what the walk already has (a file's size
from its lstat, a directory's listing) and cost nothing when unused. Whatever they leave out is
counted by the walk (`WalkStats.skip`), never left out silently.

Cache directories follow the Cache Directory Tagging Specification (https://bford.info/cachedir/),
as restic and borg do: a directory holding a regular file CACHEDIR.TAG that starts with the
signature is stored with the tag file only, so a restore shows where the cache was.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

from shadowvault.display import human_size
from shadowvault.errors import UsageError
from shadowvault.fsutil import open_regular

CACHEDIR_TAG = b"CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"

# restic's single letters are powers of 1024; the IEC names say so; KB, MB, ... are powers of 1000
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_UNITS |= {f"{u}ib": n for u, n in _UNITS.items() if u not in ("", "b")}
_UNITS |= {f"{u}b": 1000 ** (i + 1) for i, u in enumerate("kmgt")}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*")


def parse_size(text: str, option: str = "--exclude-larger-than") -> int:
    """Bytes for a size like 500, 500k, 10M, 1.5G, 2GiB or 4TB (UsageError naming `option` otherwise)."""
    match = _SIZE.fullmatch(text.lower())
    if not match or match.group(2) not in _UNITS:
        raise UsageError(f"{option} takes a size like 500k, 10M, 1.5G or 2GiB, not {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def is_cache_dir(directory: bytes) -> bool:
    """True when `directory` holds a regular CACHEDIR.TAG that starts with the signature."""
    try:
        fd = open_regular(os.path.join(directory, CACHEDIR_TAG), follow_symlinks=False)
    except OSError:  # absent, a symlink, or no regular file
        return False
    try:
        return os.read(fd, len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ExcludeRules:
    """What a backup leaves out beyond its glob excludes."""

    larger_than: int | None = None  # files above this many bytes are left out
    exclude_caches: bool = False  # directories tagged as caches keep only their tag file

    def too_large(self, st: os.stat_result) -> str | None:
        """Why a file is left out for its size (None when it is kept)."""
        if self.larger_than is None or not stat.S_ISREG(st.st_mode) or st.st_size <= self.larger_than:
            return None
        return f"larger than {human_size(self.larger_than)} ({human_size(st.st_size)})"

    def cache_dir(self, directory: bytes, names: list[bytes] | None = None) -> bool:
        """True when the directory read at `directory` is a tagged cache to leave out (given its
        listing, `names`, no file is opened unless it holds a CACHEDIR.TAG)."""
        if not self.exclude_caches or (names is not None and CACHEDIR_TAG not in names):
            return False
        return is_cache_dir(directory)
