"""An optional part of the storage interface: multipart uploads left open on object storage.

A writer killed in the middle of a multipart upload (S3) leaves the upload open: the storage keeps
its parts, and bills them, until it is completed or aborted, and no listing of objects shows it.
A backend with such uploads offers these calls so that prune can abort the abandoned ones; the
local and in-memory backends have none. Kept apart from backend_s3* so nothing here loads boto3.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class OpenUpload:
    name: str  # repository-relative, as the object would be named ("data/ab/<id>")
    upload_id: str
    initiated: float  # storage clock, seconds since the epoch


@runtime_checkable
class WithUploads(Protocol):
    @property
    def upload_max_age(self) -> float:
        """Seconds after which an open upload counts as abandoned (no writer still sends it)."""
        ...

    def list_uploads(self) -> Iterator[OpenUpload]:
        """Every open upload under the repository's location."""
        ...

    def abort_upload(self, upload: OpenUpload) -> None:
        """Abort it (idempotent: one completed or aborted meanwhile is not an error)."""
        ...
