"""Listing the objects under the repository's prefix: ListObjectsV2, page by page (S3 gives at most
1000 keys a page and a continuation token for the next), each key turned back into a name."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from shadowvault.repo.backend import FileInfo
from shadowvault.repo.backend_s3_client import S3Client
from shadowvault.repo.backend_s3_url import S3Location

LIST_PAGE_SIZE = 1000  # S3's maximum; listings follow continuation tokens page by page


def list_objects(s3: S3Client, location: S3Location, prefix: str, page_size: int) -> Iterator[FileInfo]:
    """Every object under `prefix` (a name prefix), page by page (S3 gives 1000 a page)."""
    client, bucket = s3.client, location.bucket
    start = location.key(prefix) if prefix else (f"{location.prefix}/" if location.prefix else "")
    token: str | None = None
    while True:
        args: dict[str, Any] = {"Bucket": bucket, "Prefix": start, "MaxKeys": page_size}
        if token:
            args["ContinuationToken"] = token
        page = s3.call(
            f"list {prefix or 'the repository'}", functools.partial(client.list_objects_v2, **args)
        )
        for item in page.get("Contents", []):
            name = location.name_of(item["Key"])
            yield FileInfo(name, int(item["Size"]), item["LastModified"].timestamp())
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return
