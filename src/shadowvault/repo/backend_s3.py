"""A repository in an S3 bucket (AWS or any S3-compatible server), behind the same Backend contract.

Objects are stored under `<prefix>/<name>`. A PUT is atomic in S3, so a save needs no temp object;
packs are built in a local scratch directory (temp_path) and uploaded whole, as multipart uploads
from MULTIPART_THRESHOLD on. S3Backend is the front: writes go through backend_s3_writes.py
(conditional PUTs, multipart uploads), listings through backend_s3_listing.py, the local cache
through backend_s3_caching.py; backend_s3_client.py retries and bounds the connections.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from shadowvault.errors import NotFoundError, RepositoryError, UsageError
from shadowvault.repo.backend import (
    REMOTE_CLOCK_MARGIN,
    TMP_DIR,
    Backend,
    FileInfo,
    check_name,
    is_listed,
    storage_error,
    unlink_quietly,
)
from shadowvault.repo.backend_s3_cache import ObjectCache, default_max_bytes
from shadowvault.repo.backend_s3_caching import S3Caching
from shadowvault.repo.backend_s3_client import S3Client, error_code, http_status, missing_bucket
from shadowvault.repo.backend_s3_listing import LIST_PAGE_SIZE, list_objects
from shadowvault.repo.backend_s3_uploads import (
    OpenUpload,
    abort_upload,
    list_open_uploads,
    upload_max_age_setting,
)
from shadowvault.repo.backend_s3_url import S3Location, parse_s3_url
from shadowvault.repo.backend_s3_writes import PART_SIZE, ObjectWriter
from shadowvault.repo.cache_dir import default_cache_root, private_dir, scratch_error
from shadowvault.repo.s3_credentials import S3Credentials

MULTIPART_THRESHOLD = 64 << 20  # smaller files go in one PUT (a default pack is ~16 MiB)
CLOCK_MARGIN_ENV = "SHADOWVAULT_S3_CLOCK_MARGIN"


def clock_margin_setting() -> float:
    """$SHADOWVAULT_S3_CLOCK_MARGIN seconds (how far the server's clock may be from this host's; prune
    keeps anything newer than the oldest live session's start minus this), else 10 minutes."""
    text = os.environ.get(CLOCK_MARGIN_ENV, "")
    try:
        return max(float(text), 1.0) if text else REMOTE_CLOCK_MARGIN
    except ValueError:
        raise UsageError(f"{CLOCK_MARGIN_ENV} must be a number of seconds, not {text!r}") from None


class S3Backend:
    """See backend.Backend for the contract of each call. Thread-safe."""

    def __init__(
        self,
        location: S3Location,
        *,
        cache_root: Path | None = None,
        cache_max_bytes: int | None = None,
        use_cache: bool = True,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
        client: S3Client | None = None,
        credentials: S3Credentials | None = None,
    ) -> None:
        self.location = location
        self.s3 = client or S3Client(location, credentials=credentials)
        self.multipart_threshold = multipart_threshold
        self.list_page_size = LIST_PAGE_SIZE
        self.clock_margin = clock_margin_setting()
        self.remote = True
        self._writer = ObjectWriter(location, self.s3, self.stat, part_size=part_size)
        root = (cache_root or default_cache_root()) / "s3" / _location_key(location)
        self._scratch = root / TMP_DIR
        self._caching = (
            S3Caching(ObjectCache(root / "objects", cache_max_bytes or default_max_bytes()))
            if use_cache
            else None
        )

    @property
    def cache(self) -> ObjectCache | None:
        return None if self._caching is None else self._caching.cache

    @property
    def conditional_writes(self) -> bool:
        """False once the server refused `If-None-Match` (backend_s3_writes.py)."""
        return self._writer.conditional_writes

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(cls, url: str, **options: Any) -> S3Backend:
        """The backend of an existing repository (RepositoryError when `config` is absent)."""
        backend = cls(parse_s3_url(url), **options)
        backend.require_repository()
        return backend

    @classmethod
    def create(cls, url: str, **options: Any) -> S3Backend:
        """The backend for a new repository: the bucket is made if absent, the prefix must be empty."""
        backend = cls(parse_s3_url(url), **options)
        backend.ensure_bucket()
        backend.require_empty()
        return backend

    def require_repository(self) -> None:
        try:
            self.stat("config")
        except NotFoundError:
            if self._bucket_exists() is False:  # a HEAD's 404 does not say which is missing
                raise RepositoryError(missing_bucket(self.location)) from None
            raise RepositoryError(
                f"{self.describe()} is not a Shadowvault repository (no config object)"
            ) from None

    def _bucket_exists(self) -> bool | None:
        """Whether the bucket exists; None when the server will not say (a policy without
        s3:ListBucket, say)."""
        client, bucket = self.s3.client, self.location.bucket

        def head() -> bool | None:
            try:
                client.head_bucket(Bucket=bucket)
            except botocore.exceptions.ClientError as err:
                if error_code(err) in ("404", "NoSuchBucket", "NotFound"):
                    return False
                if http_status(err) < 500:
                    return None
                raise
            return True

        try:
            return self.s3.call(f"find bucket {bucket}", head)
        except RepositoryError:
            return None

    def require_empty(self) -> None:
        if self._exists("config"):
            raise RepositoryError(f"{self.describe()} is already a repository")
        if any(True for _ in list_objects(self.s3, self.location, "", self.list_page_size)):
            raise RepositoryError(f"{self.describe()} is not empty; a repository needs an empty prefix")

    def ensure_bucket(self) -> None:
        client, bucket = self.s3.client, self.location.bucket

        def make() -> None:
            try:
                client.head_bucket(Bucket=bucket)
                return
            except botocore.exceptions.ClientError as err:
                if error_code(err) not in ("404", "NoSuchBucket", "NotFound"):
                    raise
            region = client.meta.region_name
            extra = (
                {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            )
            try:
                client.create_bucket(Bucket=bucket, **extra)
            except botocore.exceptions.ClientError as err:
                if error_code(err) != "BucketAlreadyOwnedByYou":
                    raise

        self.s3.call(f"create bucket {bucket}", make)

    def describe(self) -> str:
        return self.location.url

    # ---------------------------------------------------------------- writing

    def save(self, name: str, data: bytes) -> None:
        check_name(name)
        self._writer.put(name, bytes(data))
        if self._caching is not None:
            self._caching.saved(name, data)

    def save_file(self, name: str, path: Path) -> None:
        try:
            check_name(name)
            size = path.stat().st_size
            if size < self.multipart_threshold:
                data = path.read_bytes()
                self._writer.put(name, data)
                if self._caching is not None:
                    self._caching.saved_file(name, data, size)
            else:
                self._writer.multipart(name, path, size)
        except OSError as err:
            raise storage_error(err, name) from err
        finally:
            unlink_quietly(path)

    def temp_path(self) -> Path:
        try:
            private_dir(self._scratch)
        except OSError as err:
            raise scratch_error(err, self._scratch) from err
        return self._scratch / f"{secrets.token_hex(12)}.tmp"

    def list_temp(self) -> Iterator[FileInfo]:
        """This host's packs being built (or left by a killed writer) for this repository."""
        try:
            entries = list(os.scandir(self._scratch))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            yield FileInfo(f"{TMP_DIR}/{entry.name}", st.st_size, st.st_mtime)

    def remove(self, name: str) -> None:
        check_name(name)
        if name.startswith(f"{TMP_DIR}/"):
            unlink_quietly(self._scratch / name.split("/", 1)[1])
            return
        key, client, bucket = self.location.key(name), self.s3.client, self.location.bucket
        self.s3.call(f"remove {name}", lambda: client.delete_object(Bucket=bucket, Key=key))
        if self._caching is not None:
            self._caching.removed(name)

    # ---------------------------------------------------------------- reading

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        check_name(name)
        if self._caching is None:
            return self._get(name, offset, length)
        return self._caching.load(name, offset, length, self._get)

    def _get(self, name: str, offset: int, length: int | None) -> bytes:
        key, client, bucket = self.location.key(name), self.s3.client, self.location.bucket
        if length == 0:
            self.stat(name)
            return b""
        if offset < 0:
            wanted = f"bytes={offset}"  # the last -offset bytes (all of a shorter object)
        elif length is None:
            wanted = f"bytes={offset}-" if offset else ""
        else:
            wanted = f"bytes={offset}-{offset + length - 1}"

        def get() -> bytes:
            try:
                response = client.get_object(Bucket=bucket, Key=key, **({"Range": wanted} if wanted else {}))
            except botocore.exceptions.ClientError as err:
                if error_code(err) == "InvalidRange":
                    return b""  # the range starts past the end: nothing there
                raise
            body = response["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
            expected = response.get("ContentLength")
            if expected is not None and len(data) != expected:
                raise botocore.exceptions.IncompleteReadError(actual_bytes=len(data), expected_bytes=expected)
            return data

        data = self.s3.call(f"read {name}", get)
        return data[:length] if offset < 0 and length is not None else data

    def stat(self, name: str) -> FileInfo:
        check_name(name)
        key, client, bucket = self.location.key(name), self.s3.client, self.location.bucket
        head = self.s3.call(f"read {name}", lambda: client.head_object(Bucket=bucket, Key=key))
        return FileInfo(name, int(head["ContentLength"]), head["LastModified"].timestamp())

    def _exists(self, name: str) -> bool:
        try:
            self.stat(name)
        except NotFoundError:
            return False
        return True

    def list(self, prefix: str) -> Iterator[FileInfo]:
        base = prefix.strip("/")
        for info in list_objects(self.s3, self.location, f"{base}/" if base else "", self.list_page_size):
            if is_listed(info.name) and not info.name.startswith(f"{TMP_DIR}/"):
                yield info

    @property
    def upload_max_age(self) -> float:
        """Read when prune asks (a bad setting stops prune only, never a backup)."""
        return upload_max_age_setting()

    def list_uploads(self) -> Iterator[OpenUpload]:
        """Multipart uploads under the prefix not completed or aborted (a killed writer's), for prune."""
        return list_open_uploads(self.s3)

    def abort_upload(self, upload: OpenUpload) -> None:
        abort_upload(self.s3, self.location.key(upload.name), upload.upload_id)

    def exposed_to_others(self) -> builtins.list[str]:
        return []  # bucket policies are the storage's business; nothing here is a file mode

    def close(self) -> None:
        """Nothing to release: the client's connections are pooled for the next call."""

    @property
    def requests(self) -> int:
        """HTTP requests sent so far (retries included)."""
        return self.s3.request_total


def _location_key(location: S3Location) -> str:
    """The cache directory of one repository: a hash of its canonical URL."""
    return hashlib.sha256(location.url.encode()).hexdigest()[:24]


if TYPE_CHECKING:  # mypy proves the class implements the Protocol; nothing runs

    def _is_a_backend(s3: S3Backend) -> Backend:
        return s3
