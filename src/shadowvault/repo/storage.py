"""Where a repository lives: a location (a path or a URL) turned into its storage backend.

Supported today: a local path or a `file://` URL. An S3 backend adds its scheme here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from shadowvault.errors import UsageError
from shadowvault.repo.backend import Backend
from shadowvault.repo.backend_local import LocalBackend

SUPPORTED = "a local path or a file:// URL"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

Location = str | os.PathLike[str]


def local_path(location: Location) -> Path:
    """The directory a path or `file://` URL names; a UsageError for any other scheme."""
    text = os.fspath(location)
    if not _URL.match(text):
        return Path(text)
    url = urlsplit(text)
    if url.scheme.lower() != "file":
        raise UsageError(f"unsupported repository location {text!r}: use {SUPPORTED}")
    if url.netloc not in ("", "localhost") or not url.path:
        raise UsageError(f"{text!r} is not a local file:// URL (file:///absolute/path)")
    return Path(unquote(url.path))


def open_backend(location: Location) -> Backend:
    """The backend of an existing repository (RepositoryError when there is none)."""
    return LocalBackend.open(local_path(location))


def create_backend(location: Location) -> Backend:
    """The backend for a new repository at `location` (which must be absent or empty)."""
    return LocalBackend.create(local_path(location))
