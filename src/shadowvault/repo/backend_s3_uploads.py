"""Multipart uploads left open in the bucket (backend_uploads.py says why): listed for prune, and
aborted. Prune aborts those under the repository's prefix once they are older than a safe age
(prune_uploads.py)."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Any

import botocore.exceptions

from shadowvault.errors import UsageError
from shadowvault.repo.backend_s3_client import S3Client, error_code
from shadowvault.repo.backend_uploads import OpenUpload

UPLOAD_MAX_AGE = 24 * 3600.0  # seconds: longer than any one pack upload could still be running
UPLOAD_MAX_AGE_ENV = "SHADOWVAULT_S3_UPLOAD_MAX_AGE"
LIST_PAGE_SIZE = 1000  # S3's maximum


def upload_max_age_setting() -> float:
    """$SHADOWVAULT_S3_UPLOAD_MAX_AGE seconds (how old an open multipart upload must be before prune
    aborts it), else 24 hours."""
    text = os.environ.get(UPLOAD_MAX_AGE_ENV, "")
    try:
        value = float(text) if text else UPLOAD_MAX_AGE
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise UsageError(f"{UPLOAD_MAX_AGE_ENV} must be a number of seconds (0 or more), not {text!r}")
    return value


def list_open_uploads(s3: S3Client) -> Iterator[OpenUpload]:
    """Every open multipart upload under the repository's prefix, page by page."""
    location = s3.location
    client, bucket = s3.client, location.bucket
    key_prefix = f"{location.prefix}/" if location.prefix else ""
    markers: dict[str, str] = {}
    while True:
        args: dict[str, Any] = {
            "Bucket": bucket,
            "Prefix": key_prefix,
            "MaxUploads": LIST_PAGE_SIZE,
            **markers,
        }
        page = s3.call("list open uploads", functools.partial(client.list_multipart_uploads, **args))
        for upload in page.get("Uploads", []):
            if not str(upload["Key"]).startswith(key_prefix):
                continue  # a server that ignores Prefix
            yield OpenUpload(
                location.name_of(upload["Key"]), str(upload["UploadId"]), upload["Initiated"].timestamp()
            )
        key_marker, id_marker = page.get("NextKeyMarker"), page.get("NextUploadIdMarker")
        if not page.get("IsTruncated") or not (key_marker or id_marker):
            return
        markers = {"KeyMarker": key_marker or "", "UploadIdMarker": id_marker or ""}


def abort_upload(s3: S3Client, key: str, upload_id: str) -> None:
    """Abort one upload (its parts are freed); one already completed or aborted is not an error."""
    client, bucket = s3.client, s3.location.bucket

    def abort() -> None:
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except botocore.exceptions.ClientError as err:
            if error_code(err) != "NoSuchUpload":
                raise

    s3.call(f"abort the upload of {key}", abort)
