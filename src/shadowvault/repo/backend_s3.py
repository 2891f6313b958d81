"""A repository in an S3 bucket (AWS or any S3-compatible server), behind the same Backend contract.

Objects are stored under `<prefix>/<name>`. A PUT is atomic in S3, so a save needs no temp object;
packs are built in a local scratch directory (temp_path) and uploaded whole, as multipart uploads
from MULTIPART_THRESHOLD on. Content-addressed objects (everything but `config` and `sessions/`)
are written with `If-None-Match: *`: a retried upload whose first attempt did land then finds the
object there, which is success (same name, same bytes), and nothing immutable is ever overwritten.
See backend_s3_client.py for retries and the connection bound, backend_s3_cache.py for the cache.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import logging
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
from shadowvault.repo.backend_s3_client import S3Client, error_code, http_status
from shadowvault.repo.backend_s3_uploads import (
    OpenUpload,
    abort_upload,
    list_open_uploads,
    upload_max_age_setting,
)
from shadowvault.repo.backend_s3_url import S3Location, parse_s3_url
from shadowvault.repo.cache_dir import default_cache_root, private_dir

log = logging.getLogger(__name__)

MULTIPART_THRESHOLD = 64 << 20  # smaller files go in one PUT (a default pack is ~16 MiB)
PART_SIZE = 16 << 20  # S3 wants >= 5 MiB for every part but the last
PARALLEL_PARTS = 4  # parts of one upload in flight at once (memory: this many parts)
IMMUTABLE_DIRS = ("data/", "index/", "snapshots/", "keys/", "damage/")
CACHED_DIRS = ("index/", "snapshots/", "keys/")  # read whole, again by every process
LIST_PAGE_SIZE = 1000  # S3's maximum; listings follow continuation tokens page by page
CACHED_RANGE_MAX = 256 << 10  # tree blobs and small files (a large file's chunks are >= 256 KiB raw)
CACHED_PACK_MAX = 1 << 20  # packs this small that we write are cached whole (tree packs, mostly)
PACKS_IN_MEMORY = 8 << 20
CLOCK_MARGIN_ENV = "SHADOWVAULT_S3_CLOCK_MARGIN"


def is_immutable(name: str) -> bool:
    return name.startswith(IMMUTABLE_DIRS)


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
    ) -> None:
        self.location = location
        self.s3 = client or S3Client(location)
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.conditional_writes = True  # until the server says it does not support them
        self.list_page_size = LIST_PAGE_SIZE
        self.clock_margin = clock_margin_setting()
        self.remote = True
        self._packs: OrderedDict[str, bytes] = OrderedDict()  # see _cached_pack
        self._packs_lock = threading.Lock()
        root = (cache_root or default_cache_root()) / "s3" / _location_key(location)
        self._scratch = root / TMP_DIR
        self.cache = (
            ObjectCache(root / "objects", cache_max_bytes or default_max_bytes()) if use_cache else None
        )

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
            raise RepositoryError(
                f"{self.describe()} is not a Shadowvault repository (no config object)"
            ) from None

    def require_empty(self) -> None:
        if self._exists("config"):
            raise RepositoryError(f"{self.describe()} is already a repository")
        if any(True for _ in self._keys("")):
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
        self._put(name, bytes(data))
        self._cache_put(name, data)

    def _put(self, name: str, data: bytes) -> None:
        key = self.location.key(name)
        client, bucket = self.s3.client, self.location.bucket
        conditional = is_immutable(name)

        def put() -> None:
            extra = {"IfNoneMatch": "*"} if conditional and self.conditional_writes else {}
            try:
                client.put_object(Bucket=bucket, Key=key, Body=data, **extra)
            except botocore.exceptions.ClientError as err:
                if extra and self._already_there(err):
                    return
                if extra and self._conditions_unsupported(err):
                    client.put_object(Bucket=bucket, Key=key, Body=data)
                    return
                raise

        self.s3.call(f"write {name}", put)

    def _already_there(self, err: botocore.exceptions.ClientError) -> bool:
        """412 to If-None-Match: the object exists; its name is the hash of its bytes, so these bytes."""
        return http_status(err) == 412 or error_code(err) == "PreconditionFailed"

    def _conditions_unsupported(self, err: botocore.exceptions.ClientError) -> bool:
        if http_status(err) == 501 or error_code(err) in ("NotImplemented", "InvalidArgument"):
            if self.conditional_writes:
                log.info("S3: %s does not support conditional writes; writing without", self.describe())
            self.conditional_writes = False
            return True
        return False

    def save_file(self, name: str, path: Path) -> None:
        try:
            check_name(name)
            size = path.stat().st_size
            if size < self.multipart_threshold:
                data = path.read_bytes()
                self._put(name, data)
                if self.cache is not None and size <= CACHED_PACK_MAX and name.startswith("data/"):
                    self.cache.put(_pack_key(name), data)  # most likely this backup's trees
            else:
                self._multipart(name, path, size)
        except OSError as err:
            raise storage_error(err, name) from err
        finally:
            unlink_quietly(path)

    def _multipart(self, name: str, path: Path, size: int) -> None:
        """Upload `path` in parts (each retried on its own), then complete the upload; an upload
        that fails is aborted so no parts are left to pay for."""
        key = self.location.key(name)
        client, bucket = self.s3.client, self.location.bucket
        created = self.s3.call(
            f"start the upload of {name}", lambda: client.create_multipart_upload(Bucket=bucket, Key=key)
        )
        upload_id = created["UploadId"]
        try:
            with open(path, "rb") as f, ThreadPoolExecutor(PARALLEL_PARTS, "sv-s3-part") as pool:

                def send(number: int) -> dict[str, Any]:
                    chunk = os.pread(f.fileno(), self.part_size, (number - 1) * self.part_size)
                    upload = functools.partial(
                        client.upload_part,
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                    )
                    sent = self.s3.call(f"upload part {number} of {name}", upload)
                    return {"ETag": sent["ETag"], "PartNumber": number}

                parts = list(pool.map(send, range(1, (size + self.part_size - 1) // self.part_size + 1)))
            self.s3.call(
                f"complete the upload of {name}", lambda: self._complete(name, upload_id, parts, size)
            )
        except BaseException:
            try:
                self.s3.call(
                    f"abort the upload of {name}",
                    lambda: client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id),
                )
            except Exception as err:
                log.warning("could not abort the multipart upload of %s: %s", name, err)
            raise

    def _complete(self, name: str, upload_id: str, parts: builtins.list[dict[str, Any]], size: int) -> None:
        key = self.location.key(name)
        client, bucket = self.s3.client, self.location.bucket
        extra = {"IfNoneMatch": "*"} if is_immutable(name) and self.conditional_writes else {}
        try:
            client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **extra
            )
        except botocore.exceptions.ClientError as err:
            if extra and self._already_there(err):
                return
            if extra and self._conditions_unsupported(err):
                self._complete(name, upload_id, parts, size)
                return
            if error_code(err) == "NoSuchUpload" and self._has_size(name, size):
                return  # an earlier attempt completed it; its response was lost
            raise

    def _has_size(self, name: str, size: int) -> bool:
        try:
            return self.stat(name).size == size
        except NotFoundError:
            return False

    def temp_path(self) -> Path:
        try:
            private_dir(self._scratch)
        except OSError as err:
            raise storage_error(err, str(self._scratch)) from err
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
        if self.cache is not None:
            self.cache.discard(_cache_key(name))
            if name.startswith("data/"):
                self.cache.discard(_ranges_key(name))
                self.cache.discard(_pack_key(name))
                with self._packs_lock:
                    self._packs.pop(name, None)

    # ---------------------------------------------------------------- reading

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        check_name(name)
        if offset >= 0 and length is not None and name.startswith("data/"):
            pack = self._cached_pack(name)
            if pack is not None:
                return pack[offset : offset + length]
        cache_key = self._cache_key_for(name, offset, length)
        if cache_key is not None and self.cache is not None:
            cached = self.cache.get(cache_key)
            if cached is not None:
                return cached
        data = self._get(name, offset, length)
        if cache_key is not None and self.cache is not None and (length is None or len(data) == length):
            self.cache.put(cache_key, data)
        return data

    def _cached_pack(self, name: str) -> bytes | None:
        """A small pack this host wrote (kept whole in the cache), verified once and then held in
        memory (at most PACKS_IN_MEMORY bytes) so that reading its trees one by one costs nothing."""
        if self.cache is None:
            return None
        with self._packs_lock:
            pack = self._packs.get(name)
            if pack is not None:
                self._packs.move_to_end(name)
                return pack
        pack = self.cache.get(_pack_key(name))
        if pack is None:
            return None
        with self._packs_lock:
            self._packs[name] = pack
            while sum(map(len, self._packs.values())) > PACKS_IN_MEMORY:
                self._packs.popitem(last=False)
        return pack

    def _cache_key_for(self, name: str, offset: int, length: int | None) -> str | None:
        if name.startswith(CACHED_DIRS) and offset == 0 and length is None:
            return _cache_key(name)
        if name.startswith("data/") and offset >= 0 and length is not None and 0 < length <= CACHED_RANGE_MAX:
            return f"{_ranges_key(name)}/{offset}-{length}"
        return None

    def _cache_put(self, name: str, data: bytes) -> None:
        if self.cache is not None and name.startswith(CACHED_DIRS):
            self.cache.put(_cache_key(name), bytes(data))

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

    def _keys(self, prefix: str) -> Iterator[FileInfo]:
        """Every object under `prefix` (a name prefix), page by page (S3 gives 1000 a page)."""
        client, bucket = self.s3.client, self.location.bucket
        start = (
            self.location.key(prefix)
            if prefix
            else (f"{self.location.prefix}/" if self.location.prefix else "")
        )
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": bucket, "Prefix": start, "MaxKeys": self.list_page_size}
            if token:
                args["ContinuationToken"] = token
            page = self.s3.call(
                f"list {prefix or 'the repository'}", functools.partial(client.list_objects_v2, **args)
            )
            for item in page.get("Contents", []):
                name = self.location.name_of(item["Key"])
                yield FileInfo(name, int(item["Size"]), item["LastModified"].timestamp())
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def list(self, prefix: str) -> Iterator[FileInfo]:
        base = prefix.strip("/")
        for info in self._keys(f"{base}/" if base else ""):
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


def _cache_key(name: str) -> str:
    return f"whole/{name}"


def _ranges_key(name: str) -> str:
    return f"ranges/{name}"


def _pack_key(name: str) -> str:
    return f"packs/{name}"


if TYPE_CHECKING:  # mypy proves the class implements the Protocol; nothing runs

    def _is_a_backend(s3: S3Backend) -> Backend:
        return s3
