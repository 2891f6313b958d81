"""A bounded thread pool for storing file contents: chunk in the caller, hash/compress/encrypt in workers.

Memory is bounded by `max_pending` chunks in flight (each <= the chunker's maximum), whatever the size
of the files; several threads may call `save_file` at once and share the workers.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from shadowvault.repo.format import BlobType
from shadowvault.repo.repository import Repository


class Uploader:
    def __init__(self, repo: Repository, threads: int | None = None, max_pending: int | None = None) -> None:
        self.repo = repo
        self.threads = threads or max(2, min(8, os.cpu_count() or 2))
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="sv-upload")
        self._slots = threading.BoundedSemaphore(max_pending or 2 * self.threads + 2)

    def _save(self, kind: BlobType, data: bytes) -> bytes:
        try:
            return self.repo.save_blob(kind, data)
        finally:
            self._slots.release()

    def submit(self, kind: BlobType, data: bytes) -> Future[bytes]:
        """Queue one blob; blocks while too many are in flight."""
        self._slots.acquire()
        try:
            return self._pool.submit(self._save, kind, data)
        except BaseException:
            self._slots.release()
            raise

    def save_file(self, source: str | os.PathLike[str] | BinaryIO) -> tuple[list[bytes], int]:
        """Store a file's content; returns its DATA blob ids in order and the number of bytes read."""
        futures = []
        size = 0
        try:
            for chunk in self.repo.chunk_file(source):
                size += len(chunk)
                futures.append(self.submit(BlobType.DATA, chunk))
            return [f.result() for f in futures], size
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Uploader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
