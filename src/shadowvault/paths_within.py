"""Whether one path lies within another: the one test every layer uses for mounts, roots and data dirs."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from typing import TypeGuard


def is_within(path: str, root: str) -> bool:
    """Whether absolute `path` is `root` itself or lies below it, comparing whole path components.

    Plain string prefixes are wrong (`/srv/data2` is not within `/srv/data`); both paths are taken
    as given (normalize or resolve them first when they may hold `..`, `//` or symlinks).
    """
    root = root.rstrip("/")
    if not root:
        return path.startswith("/")
    return path == root or path.startswith(root + "/")


def is_plain_absolute(value: object) -> TypeGuard[str]:
    """Whether `value` names one place the only way it can: a string that is an absolute path with no
    `.` or `..` part, no doubled or trailing slash. A path read from a record (a snapshot, a state
    file) is checked so before anything is made, mounted, removed or replaced at it."""
    return (
        isinstance(value, str)
        and value.startswith("/")
        and not value.startswith("//")
        and posixpath.normpath(value) == value
    )


def innermost(path: str, roots: Iterable[str]) -> str | None:
    """The deepest of `roots` that `path` lies within (the mount that holds it), or None."""
    return max((root for root in roots if is_within(path, root)), key=len, default=None)


def inside_root(root: str | os.PathLike[str], path: str) -> str | None:
    """Host path `path` as an absolute path inside the tree at `root` (a source root being backed
    up), resolving symlinks; None when it lies outside that tree."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    if base == "/":
        return real
    if real == base:
        return "/"
    return "/" + os.path.relpath(real, base) if is_within(real, base) else None
