"""Fixtures of the daemon's tests: the S3 server of the repository tests (moto, on 127.0.0.1)."""

from tests.repo.conftest import s3, s3_env  # noqa: F401 - shared fixtures
