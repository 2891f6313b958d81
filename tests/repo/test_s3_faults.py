"""Faults between the client and S3: connections dropped in the middle of uploads (single PUTs and
multipart parts), uploads applied whose response is lost, 500s, and listings and downloads cut off
halfway. Every backup still commits, nothing is lost, and `check --read-data` passes."""

from __future__ import annotations

import os
import random
import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import botocore.exceptions
import pytest
from urllib3.exceptions import SSLError
from urllib3.util.ssl_match_hostname import CertificateError

from shadowvault.errors import RepositoryError
from shadowvault.repo.backend_s3_client import is_transient, translate
from shadowvault.repo.backend_s3_url import S3Location
from shadowvault.repo.check import check
from shadowvault.repo.repository import Repository
from tests.fixtures.s3_faults import Fault, FaultProxy
from tests.fixtures.s3_server import S3Server
from tests.repo.helpers import PASSWORD, make_snapshot, restore_all
from tests.repo.test_backend_s3 import make_backend, raw_client

MiB = 1 << 20


@pytest.fixture
def proxy(s3_env: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_env.port) as made:
        yield made


def faults_everywhere() -> list[Fault]:
    """The first matching rule decides; each fires on every n-th request it matches."""
    return [
        # packs: one PUT, or the parts of a multipart upload (their path is the pack's too)
        Fault(("drop_mid_body", "error_500", "drop_response"), method="PUT", path="/data/", every=3),
        Fault(("drop_response", "error_500"), method="POST", query="uploadId=", every=2),  # complete
        Fault(
            ("error_500", "truncate_response", "drop_response"), method="GET", query="list-type=2", every=2
        ),
        Fault(("drop_response", "drop_mid_body"), method="PUT", path="/index/", every=2),
        Fault(("drop_response", "error_500"), method="PUT", path="/snapshots/", every=2),
        Fault(("truncate_response", "error_500", "drop_response"), method="GET", path="/data/", every=3),
    ]


def test_dropped_connections_and_500s_lose_nothing(
    s3_env: S3Server, proxy: FaultProxy, tmp_path: Path
) -> None:
    bucket = f"sv-faults-{secrets.token_hex(4)}"
    proxy.faults = faults_everywhere()

    def backend():  # type: ignore[no-untyped-def]
        return make_backend(
            proxy.url(bucket), tmp_path / "cache", multipart_threshold=6 * MiB, part_size=5 * MiB
        )

    rnd = random.Random(7)
    shared = rnd.randbytes(3 * MiB)
    expected: dict[str, dict[str, bytes]] = {}
    repo = Repository.init(backend(), PASSWORD, pack_size=6 * MiB)
    repo.close()
    for n in range(3):
        files = {"big": rnd.randbytes(9 * MiB), "shared": shared, "small": rnd.randbytes(100_000)}
        with Repository.open(backend(), PASSWORD, write=True) as repo:
            snapshot_id, _ = make_snapshot(repo, files, tags=[f"n={n}"])
        expected[snapshot_id] = {**files, "sub/inner": b"inner"}

    with Repository.open(backend(), PASSWORD) as repo:
        assert sorted(sid for sid, _ in repo.list_snapshots()) == sorted(expected)
        for snapshot_id, files in expected.items():
            assert restore_all(repo, snapshot_id) == files
        report = check(repo, read_data_fraction=1.0)
        assert report.ok, report.errors
        assert report.snapshots == 3 and report.unindexed_packs == 0

    for action in ("drop_mid_body", "error_500", "drop_response", "truncate_response"):
        assert proxy.injected[action] >= 2, proxy.injected
    assert proxy.requests["PUT part"] > 0  # the packs went up in parts
    location_uploads = raw_client(s3_env).list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert location_uploads == []  # every failed upload was completed or aborted

    # and the command line agrees, straight to the server
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shadowvault.cli.launch",
            "check",
            "--read-data",
            "--repo",
            f"s3:{s3_env.endpoint}/{bucket}/repo",
        ],
        env={**os.environ, "SHADOWVAULT_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "no errors" in done.stdout + done.stderr


def test_a_server_that_keeps_failing_is_one_clear_error(s3_env: S3Server, proxy: FaultProxy) -> None:
    """Retries end: after the last attempt the user sees one line naming the object and the cause."""
    backend = make_backend(proxy.url(f"sv-down-{secrets.token_hex(4)}"))
    proxy.faults = [Fault(("error_500",), method="PUT", path="/index/", every=1)]
    with pytest.raises(
        Exception,
        match=r"cannot write index/aa at s3:http://127\.0\.0\.1:\d+/.* after 8 attempts: InternalError",
    ):
        backend.save("index/aa", b"x")
    assert proxy.injected["error_500"] == 8


def test_an_endpoint_nobody_listens_on_is_one_clear_error(s3_env: S3Server) -> None:
    from tests.fixtures.servers import free_port

    with pytest.raises(RepositoryError, match=r"after 8 attempts: Could not connect to the endpoint URL"):
        make_backend(f"s3:http://127.0.0.1:{free_port()}/sv-nobody/repo")


def test_an_https_url_for_a_plain_http_server_fails_at_once_saying_so(s3_env: S3Server) -> None:
    """A TLS handshake that cannot succeed is not retried (8 tries took 9 s to say "SSL validation
    failed ... WRONG_VERSION_NUMBER")."""
    url = f"s3:https://127.0.0.1:{s3_env.port}/sv-tls-{secrets.token_hex(4)}/repo"
    started = time.monotonic()
    with pytest.raises(RepositoryError, match=r"does not speak HTTPS there \(for plain HTTP write s3:http"):
        make_backend(url)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("inner", "said"),
    [
        (
            ssl.SSLCertVerificationError(
                1,
                "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                "self-signed certificate (_ssl.c:1006)",
            ),
            "its TLS certificate is not trusted (for a private CA, set AWS_CA_BUNDLE): certificate verify"
            " failed: self-signed certificate",
        ),
        (
            CertificateError("hostname '127.0.0.1' doesn't match 'localhost'"),
            "its TLS certificate is for another host name: hostname '127.0.0.1' doesn't match 'localhost'",
        ),
    ],
)
def test_a_certificate_that_cannot_pass_is_not_retried(inner: Exception, said: str) -> None:
    err = botocore.exceptions.SSLError(endpoint_url="https://s3.example/b/config", error=SSLError(inner))
    assert not is_transient(err)
    assert str(translate(err, "read config", S3Location("https://s3.example", "b", ""))) == (
        f"cannot reach s3:https://s3.example/b: {said}"
    )
