"""Exclude rules that need more than a path: a size limit, and tagged directories.

Glob excludes are `patterns.PathFilter`; these look at what the walk already has (a file's size
from its lstat, a directory's listing) and cost nothing when unused. Whatever they leave out is
counted by the walk (`WalkStats.skip`), never left out silently.

A tagged directory (restic's `--exclude-if-present NAME[:HEADER]`) holds an entry NAME (a regular
file starting with HEADER, when one is given): it is stored with its tag file only, so a restore
shows where it was. Cache directories (`--exclude-caches`) are the rule restic and borg make of the
Cache Directory Tagging Specification (https://bford.info/cachedir/): CACHEDIR.TAG with its signature.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

from shadowvault.archive.entry_stat import EntryStat
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


@dataclass(frozen=True)
class TagRule:
    """A directory holding `name` (starting with `header`, when not empty) keeps only that entry."""

    name: bytes
    header: bytes = b""

    @property
    def kind(self) -> str:
        """How WalkStats counts what it leaves out: cache_dir for the caches rule, else if_present."""
        return "cache_dir" if self == CACHES else "if_present"

    def reason(self, left_out: int) -> str:
        """Why a directory's entries were left out, for the summary."""
        entries = "1 entry" if left_out == 1 else f"{left_out} entries"
        what = "cache directory (CACHEDIR.TAG)" if self == CACHES else f"holds {os.fsdecode(self.name)}"
        return f"{what}: {entries} left out"

    def tags(self, directory: bytes) -> bool:
        """True when `directory` holds the tag: any entry of the name without a header (as restic
        looks: lstat), else a regular file (no symlink followed) that starts with the header."""
        tag = os.path.join(directory, self.name)
        if not self.header:
            return os.path.lexists(tag)
        try:
            fd = open_regular(tag, follow_symlinks=False)
        except OSError:  # absent, a symlink, or no regular file
            return False
        try:
            return os.read(fd, len(self.header)) == self.header
        except OSError:
            return False
        finally:
            os.close(fd)


CACHES = TagRule(CACHEDIR_TAG, CACHEDIR_SIGNATURE)


def parse_tag_rule(spec: str, option: str = "--exclude-if-present") -> TagRule:
    """restic's FILENAME[:HEADER] (UsageError naming `option` when the name is empty or a path)."""
    name, _, header = spec.partition(":")
    if not name or "/" in name or name in (".", ".."):
        raise UsageError(
            f"{option} takes a file name, optionally with :HEADER (like .nobackup), not {spec!r}"
        )
    return TagRule(os.fsencode(name), os.fsencode(header))


def tag_rules(exclude_caches: bool, specs: list[str] | tuple[str, ...] = ()) -> tuple[TagRule, ...]:
    """The rules of --exclude-caches and each --exclude-if-present spec, each once."""
    rules = [CACHES] if exclude_caches else []
    return tuple(dict.fromkeys([*rules, *(parse_tag_rule(spec) for spec in specs)]))


@dataclass(frozen=True)
class ExcludeRules:
    """What a backup leaves out beyond its glob excludes."""

    larger_than: int | None = None  # files above this many bytes are left out
    tag_rules: tuple[TagRule, ...] = ()  # tagged directories keep only their tag files

    def too_large(self, st: EntryStat) -> str | None:
        """Why a file is left out for its size (None when it is kept)."""
        if self.larger_than is None or not stat.S_ISREG(st.st_mode) or st.st_size <= self.larger_than:
            return None
        limit, size = human_size(self.larger_than), human_size(st.st_size)
        if limit == size:  # rounded alike ("3.9 KiB (3.9 KiB)" reads as a wrong decision): in bytes
            limit, size = f"{self.larger_than} B", f"{st.st_size} B"
        return f"larger than {limit} ({size})"

    def tagged(self, directory: bytes, names: list[bytes] | None = None) -> list[TagRule]:
        """The rules whose tag the directory read at `directory` holds (given its listing, `names`,
        nothing is looked up unless a tag's name is in it)."""
        return [
            rule for rule in self.tag_rules if (names is None or rule.name in names) and rule.tags(directory)
        ]
