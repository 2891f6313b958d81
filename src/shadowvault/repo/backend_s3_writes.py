"""How the S3 backend writes an object: one PUT, or a multipart upload for a large file, conditional
on the name being free wherever the name is the hash of the bytes.

Content-addressed objects (everything but `config` and `sessions/`) are written with
`If-None-Match: *`: a retried upload whose first attempt did land then finds the object there,
which is success (same name, same bytes), and nothing immutable is ever overwritten. A server that
does not support the condition is written to without it from then on.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import botocore.exceptions

from shadowvault.errors import NotFoundError
from shadowvault.repo.backend import FileInfo
from shadowvault.repo.backend_s3_client import S3Client, error_code, http_status
from shadowvault.repo.backend_s3_url import S3Location

log = logging.getLogger(__name__)

PART_SIZE = 16 << 20  # S3 wants >= 5 MiB for every part but the last
PARALLEL_PARTS = 4  # parts of one upload in flight at once (memory: this many parts)
IMMUTABLE_DIRS = ("data/", "index/", "snapshots/", "keys/", "damage/")


def is_immutable(name: str) -> bool:
    return name.startswith(IMMUTABLE_DIRS)


class ObjectWriter:
    """The S3 backend's PUTs and multipart uploads. Thread-safe. `stat` is the backend's (a
    completion whose response was lost is recognised by the object's size)."""

    def __init__(
        self,
        location: S3Location,
        s3: S3Client,
        stat: Callable[[str], FileInfo],
        *,
        part_size: int = PART_SIZE,
    ) -> None:
        self.location = location
        self.s3 = s3
        self.part_size = part_size
        self.conditional_writes = True  # until the server says it does not support them
        self._stat = stat

    def put(self, name: str, data: bytes) -> None:
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
                log.info("S3: %s does not support conditional writes; writing without", self.location.url)
            self.conditional_writes = False
            return True
        return False

    def multipart(self, name: str, path: Path, size: int) -> None:
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

    def _complete(self, name: str, upload_id: str, parts: list[dict[str, Any]], size: int) -> None:
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
            return self._stat(name).size == size
        except NotFoundError:
            return False
