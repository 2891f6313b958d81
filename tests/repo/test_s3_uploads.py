"""Prune aborts the multipart uploads a killed backup left in the bucket (S3 keeps their parts, and
bills them, until someone does): only under the repository's prefix, only once older than the safe
age (24 h unless configured), and never one that a running backup may still be sending."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import boto3
import pytest

from shadowvault.repo.prune import prune
from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF
from tests.fixtures.s3_server import S3Server
from tests.fixtures.s3_upload_clock import UploadClockProxy
from tests.repo.helpers import PASSWORD

DAY = 24 * 3600


@pytest.fixture
def clock(s3_env: S3Server) -> Iterator[UploadClockProxy]:
    with UploadClockProxy(s3_env.port) as made:
        yield made


def start_upload(client, bucket: str, key: str) -> str:  # type: ignore[no-untyped-def]
    """An upload with one part sent and never completed: what a killed backup leaves."""
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 4096)
    return str(upload_id)


def open_uploads(client, bucket: str) -> set[str]:  # type: ignore[no-untyped-def]
    return {u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}


def test_prune_aborts_abandoned_uploads_under_its_prefix_once_they_are_old(
    clock: UploadClockProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = f"sv-uploads-{secrets.token_hex(4)}"
    url = clock.url(bucket, "repo")
    Repository.init(url, PASSWORD, kdf_params=FAST_KDF).close()
    client = boto3.client("s3", endpoint_url=clock.endpoint, region_name="us-east-1")
    abandoned = start_upload(client, bucket, f"repo/data/ab/{'a' * 64}")
    fresh = start_upload(client, bucket, f"repo/data/cd/{'c' * 64}")
    elsewhere = start_upload(client, bucket, f"repo2/data/ab/{'b' * 64}")  # another repository's
    clock.backdate(abandoned, 2 * DAY)
    clock.backdate(elsewhere, 2 * DAY)

    with Repository.open(url, PASSWORD, write=True, kind="prune") as repo:
        dry = prune(repo, dry_run=True)
    assert dry.uploads_aborted == 1 and "would abort 1 abandoned multipart upload" in dry.summary()
    assert open_uploads(client, bucket) == {abandoned, fresh, elsewhere}

    with Repository.open(url, PASSWORD, write=True, kind="prune") as repo:
        done = prune(repo)
    assert done.uploads_aborted == 1 and "aborted 1 abandoned multipart upload" in done.summary()
    assert open_uploads(client, bucket) == {fresh, elsewhere}, "the fresh one and another prefix's stay"

    # A safe age of 0: what no running backup can own goes now; a running backup protects its own.
    monkeypatch.setenv("SHADOWVAULT_S3_UPLOAD_MAX_AGE", "0")
    clock.backdate(fresh, 3600)  # older than the backup below by more than the clock margin
    with Repository.open(url, PASSWORD, write=True, kind="backup"):
        running = start_upload(client, bucket, f"repo/data/ef/{'e' * 64}")
        with Repository.open(url, PASSWORD, write=True, kind="prune") as repo:
            beside_a_backup = prune(repo)
    assert open_uploads(client, bucket) == {elsewhere, running}, "started after the backup's session"
    assert beside_a_backup.uploads_aborted == 1  # the fresh one: older than any live session


def test_a_bad_safe_age_stops_prune_with_one_line(s3_url: str, cli) -> None:  # type: ignore[no-untyped-def]
    Repository.init(s3_url, PASSWORD, kdf_params=FAST_KDF).close()
    env = {
        "SHADOWVAULT_PASSWORD": PASSWORD,
        "SHADOWVAULT_NO_DAEMON": "1",
        "SHADOWVAULT_S3_UPLOAD_MAX_AGE": "a day",
    }
    pruned = cli("prune", "--repo", s3_url, env=env)
    assert pruned.returncode == 2
    assert pruned.stderr.strip().splitlines() == [
        "shadowvault: error: SHADOWVAULT_S3_UPLOAD_MAX_AGE must be a number of seconds (0 or more),"
        " not 'a day'"
    ]
