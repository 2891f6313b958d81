"""Repository locations: S3 URLs parse into endpoint, bucket and prefix; a location with a scheme
is never taken for a local path (`init --repo s3:http://...` once made a directory `s3:http:`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from shadowvault.errors import UsageError
from shadowvault.repo.backend_s3_url import S3Location, parse_s3_url
from shadowvault.repo.repository import Repository
from shadowvault.repo.storage import local_path
from tests.fixtures.s3_server import S3Server
from tests.repo.helpers import PASSWORD


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3:http://127.0.0.1:9000/bucket/repo", S3Location("http://127.0.0.1:9000", "bucket", "repo")),
        ("s3:https://minio.example:443/bkt", S3Location("https://minio.example:443", "bkt", "")),
        ("s3:http://[::1]:9000/bkt/a/b/", S3Location("http://[::1]:9000", "bkt", "a/b")),
        ("s3:s3.amazonaws.com/my-bucket/hosts/web1", S3Location(None, "my-bucket", "hosts/web1")),
        ("s3:objects.example.org/bkt/p", S3Location("https://objects.example.org", "bkt", "p")),
    ],
)
def test_s3_urls_name_endpoint_bucket_and_prefix(url: str, expected: S3Location) -> None:
    assert parse_s3_url(url) == expected
    assert parse_s3_url(parse_s3_url(url).url) == expected  # describe() gives a URL that reopens


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://bucket/x", "not an S3 repository URL"),
        ("s3:ftp://host/bucket", "not an S3 repository URL"),
        ("s3:http://127.0.0.1:9000", "names no bucket"),
        ("s3:http://127.0.0.1:9000/", "names no bucket"),
        ("s3:http://key:secret@127.0.0.1:9000/bkt", "no credentials"),
        ("s3:http://127.0.0.1:99999/bkt", "invalid port"),
        ("s3:http://127.0.0.1:0/bkt", "invalid port"),  # these were tried 8 times over 13 s
        ("s3:http://127.0.0.1:/bkt", "invalid port"),
        ("s3:objects.example.org:0/bkt", "invalid port"),
        ("s3:objects.example.org:x/bkt", "invalid port"),
        ("s3:http://[::1/bkt", r"not an S3 repository URL \(Invalid IPv6 URL\)"),  # was an internal error
        ("s3:http://127.0.0.1:9000/Bad_Bucket/x", "not a valid S3 bucket name"),
        ("s3:http://127.0.0.1:9000/bkt/../x", "may not contain"),
    ],
)
def test_malformed_s3_urls_are_one_clear_error(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Repository.validate_new_path(url)


def test_an_endpoint_the_client_refuses_is_a_usage_error() -> None:
    """botocore checks the endpoint's host when the client is made (a label over 63 characters): it
    was an internal error (ValueError), now one line before any request."""
    host = "a" * 70
    with pytest.raises(UsageError, match=f"s3:http://{host}:9000/bkt: Invalid endpoint: http://{host}:9000"):
        Repository.validate_path(f"s3:http://{host}:9000/bkt")


@pytest.mark.parametrize(
    "location", ["ftp://host/repo", "sftp:host:/srv/repo", "rest:http://x/", "backups:2024"]
)
def test_any_other_scheme_is_refused_never_a_directory(location: str) -> None:
    with pytest.raises(UsageError, match=r"unsupported repository location.*\./NAME"):
        local_path(location)


def test_paths_that_only_look_like_urls_stay_paths(tmp_path: Path) -> None:
    assert local_path("./backups:2024") == Path("backups:2024")
    assert local_path(f"{tmp_path}/a:b") == tmp_path / "a:b"
    assert local_path("relative/dir") == Path("relative/dir")
    assert local_path(f"file://{tmp_path}/r") == tmp_path / "r"


def _shadowvault(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHADOWVAULT_PASSWORD": PASSWORD}
    return subprocess.run(
        [sys.executable, "-m", "shadowvault.cli.launch", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_init_with_an_s3_url_creates_the_repository_there_and_no_local_directory(
    s3_url: str, tmp_path: Path
) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    done = _shadowvault(["init", "--repo", s3_url, "--json"], workdir)
    assert done.returncode == 0, done.stderr
    assert list(workdir.iterdir()) == []  # no `s3:http:` directory
    assert s3_url in done.stdout
    listed = _shadowvault(["snapshots", "--repo", s3_url], workdir)
    assert listed.returncode == 0, listed.stderr
    again = _shadowvault(["init", "--repo", s3_url], workdir)
    assert again.returncode != 0
    assert again.stderr.strip().endswith("is already a repository")
    assert again.stderr.count("\n") == 1


def test_an_unknown_scheme_at_init_is_exit_2_and_makes_nothing(tmp_path: Path) -> None:
    done = _shadowvault(["init", "--repo", "sftp:host:/srv/repo"], tmp_path)
    assert done.returncode == 2
    assert "unsupported repository location 'sftp:host:/srv/repo'" in done.stderr
    assert done.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_opening_an_s3_location_without_a_repository_fails_before_the_password(
    s3_env: S3Server, tmp_path: Path
) -> None:
    url = s3_env.url()
    done = _shadowvault(["snapshots", "--repo", url], tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert "does not exist" in done.stderr or "not a Shadowvault repository" in done.stderr


def test_missing_credentials_are_named(s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    done = _shadowvault(["init", "--repo", s3_url], tmp_path)
    assert done.returncode != 0
    assert "no S3 credentials" in done.stderr and "AWS_ACCESS_KEY_ID" in done.stderr
    assert done.stderr.count("\n") == 1


def test_credentials_come_from_the_aws_credentials_file_too(
    s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        "[backup]\naws_access_key_id = from-a-file\naws_secret_access_key = also-from-it\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "backup")
    done = _shadowvault(["init", "--repo", s3_url], tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("s3:http://user:hunter2@127.0.0.1:9000/bkt/repo", "s3:http://***@127.0.0.1:9000/bkt/repo"),
        ("s3:user:hunter2@objects.example.org/bkt", "s3:***@objects.example.org/bkt"),
        ("s3:http://127.0.0.1:9000/bkt?key=hunter2", "s3:http://127.0.0.1:9000/bkt?***"),
        ("sftp://user:hunter2@host/srv/repo", "sftp://***@host/srv/repo"),
        ("sftp:user:hunter2@host:/srv/repo", "sftp:***@host:/srv/repo"),
        ("file://user:hunter2@host/srv/repo", "file://***@host/srv/repo"),
    ],
)
def test_a_refused_location_is_shown_without_its_credentials(url: str, shown: str) -> None:
    with pytest.raises(UsageError) as refused:
        Repository.validate_path(url)
    assert repr(shown) in str(refused.value) and "hunter2" not in str(refused.value)


def test_credentials_in_an_s3_url_are_refused_and_never_echoed(s3_env: S3Server, tmp_path: Path) -> None:
    url = f"s3:http://backup:hunter2@127.0.0.1:{s3_env.port}/bkt/repo"
    for command in ("init", "snapshots"):
        done = _shadowvault([command, "--repo", url], tmp_path)
        assert done.returncode == 2
        assert done.stderr.splitlines() == [
            f"shadowvault: error: 's3:http://***@127.0.0.1:{s3_env.port}/bkt/repo': no credentials, query or "
            "fragment in an S3 URL (credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
            "~/.aws/credentials)"
        ]


def test_a_missing_bucket_is_named(s3_env: S3Server, tmp_path: Path) -> None:
    bucket = f"nobucket-{os.getpid()}"
    done = _shadowvault(["snapshots", "--repo", f"s3:{s3_env.endpoint}/{bucket}/repo"], tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"shadowvault: error: bucket {bucket} does not exist at {s3_env.endpoint}"
    ]
    boto3.client("s3", endpoint_url=s3_env.endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    empty = _shadowvault(["snapshots", "--repo", f"s3:{s3_env.endpoint}/{bucket}/repo"], tmp_path)
    assert empty.returncode == 1
    assert empty.stderr.splitlines() == [
        f"shadowvault: error: s3:{s3_env.endpoint}/{bucket}/repo is not a Shadowvault repository "
        "(no config object)"
    ]


def test_a_profile_that_does_not_exist_is_one_line(
    s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    done = _shadowvault(["snapshots", "--repo", s3_url], tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"shadowvault: error: cannot reach {s3_url}: The config profile (no-such-profile) could not be found"
    ]
