"""Fixtures of the repository tests: an S3 server (moto, on 127.0.0.1) shared by the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.s3_server import S3Server, credentials_env, s3_server


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Server:
    """The server, with its credentials and a private cache directory in this test's environment."""
    for name, value in credentials_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SHADOWVAULT_CACHE_DIR", str(tmp_path / "cache"))
    return s3


@pytest.fixture
def s3_url(s3_env: S3Server) -> str:
    """A fresh, empty repository location on the server (its own bucket)."""
    return s3_env.url()
