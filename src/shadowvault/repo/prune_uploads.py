"""Open multipart uploads a killed writer left on object storage: which ones prune may abort.

An upload is abandoned when no writer can still be sending it: it started before every live
session (the rule prune applies to temp files, docs/repository.md step 5) and longer ago than a
safe age (24 h unless configured), which also covers a writer on a host whose clock is off or a
server that reports upload times loosely. Storage without multipart uploads has none.
"""

from __future__ import annotations

import time

from shadowvault.repo.backend_uploads import OpenUpload, WithUploads


def abandoned_uploads(backend: object, protect_from: float, max_age: float | None = None) -> list[OpenUpload]:
    """The backend's open uploads started before `protect_from` (the oldest live session's start
    minus the clock margin) and more than `max_age` seconds ago (default: the backend's setting)."""
    if not isinstance(backend, WithUploads):
        return []
    age = backend.upload_max_age if max_age is None else max_age
    cutoff = min(protect_from, time.time() - age)
    return [upload for upload in backend.list_uploads() if upload.initiated < cutoff]


def abort_uploads(backend: object, uploads: list[OpenUpload]) -> int:
    """Abort `uploads` (their parts stop costing storage); returns how many."""
    if not isinstance(backend, WithUploads):
        return 0
    for upload in uploads:
        backend.abort_upload(upload)
    return len(uploads)
