"""Where a repository lives: a location (a path or a URL) turned into its storage backend.

A location is a local path, a `file://` URL, or an S3 URL (`s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]`,
`s3:s3.amazonaws.com/BUCKET[/PREFIX]`). Anything that starts with a scheme (`name:`) is a URL and
never a local path: `s3:http://...` once silently became a directory named `s3:http:`. A local
directory whose name has a colon is written `./name:with:colons`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from shadowvault.errors import UsageError
from shadowvault.repo.backend import Backend
from shadowvault.repo.backend_local import LocalBackend
from shadowvault.repo.backend_s3_url import S3_FORMS, is_s3_url, parse_s3_url, redacted
from shadowvault.repo.s3_credentials import S3Credentials

SUPPORTED = f"a local path, a file:// URL, or {S3_FORMS}"
# A scheme: a letter, then letters, digits, + . - and a colon (two characters at least, so that
# nothing shorter than a word is taken for one).
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")

Location = str | os.PathLike[str]
Where = Location | Backend  # a path or URL, or a backend already made (e.g. a MemoryBackend)


def has_scheme(text: str) -> bool:
    return bool(_SCHEME.match(text))


def is_remote(location: Location) -> bool:
    """True for a location that is not on this machine's filesystem (an S3 URL)."""
    return not isinstance(location, os.PathLike) and is_s3_url(location)


def local_path(location: Location) -> Path:
    """The directory a path or `file://` URL names; a UsageError for any other scheme."""
    if isinstance(location, os.PathLike):
        return Path(location)
    text = location
    if not has_scheme(text):
        return Path(text)
    url = urlsplit(text)
    shown = redacted(text)  # a message never echoes credentials
    if url.scheme.lower() != "file":
        raise UsageError(
            f"unsupported repository location {shown!r}: use {SUPPORTED} "
            "(a local directory whose name has a colon: ./NAME)"
        )
    if not text.lower().startswith("file://"):
        raise UsageError(f"{shown!r} is not a file:// URL (file:///absolute/path)")
    if url.netloc not in ("", "localhost") or not url.path:
        raise UsageError(f"{shown!r} is not a local file:// URL (file:///absolute/path)")
    return Path(unquote(url.path))


def open_backend(location: Location) -> Backend:
    """The backend of an existing repository (RepositoryError when there is none)."""
    if is_remote(location):
        from shadowvault.repo.backend_s3 import S3Backend  # boto3 loads only when S3 is used

        return S3Backend.open(os.fspath(location))
    return LocalBackend.open(local_path(location))


def create_backend(location: Location) -> Backend:
    """The backend for a new repository at `location` (which must be absent or empty)."""
    if is_remote(location):
        from shadowvault.repo.backend_s3 import S3Backend

        return S3Backend.create(os.fspath(location))
    return LocalBackend.create(local_path(location))


def validate_existing(location: Location, s3_credentials: S3Credentials | None = None) -> Location | Backend:
    """Where a repository is, checked before a password is asked: a local path comes back as a
    Path, an S3 URL as its backend, already open (one client, one request fewer), signing with
    `s3_credentials` when given (else the process's environment)."""
    if is_remote(location):
        from shadowvault.repo.backend_s3 import S3Backend

        return S3Backend.open(os.fspath(location), credentials=s3_credentials)
    return LocalBackend.existing_root(local_path(location))


def validate_new(location: Location) -> Location:
    """`location` if it can receive a new repository (absent or empty, for a local path)."""
    if is_remote(location):
        parse_s3_url(os.fspath(location))
        return os.fspath(location)
    return LocalBackend.new_root(local_path(location))


def backend_for(where: Where, *, new: bool = False) -> Backend:
    """The backend of `where`: opened (or with `new`, created) for a path or URL, as given otherwise."""
    if isinstance(where, (str, os.PathLike)):
        return create_backend(where) if new else open_backend(where)
    return where
