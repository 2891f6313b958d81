"""What the S3 backend adds to the shared contract: multipart uploads, conditional writes, paginated
listing, ranged reads that fetch only the range, a bounded number of connections, the local cache.
Against moto's server on 127.0.0.1 (through a counting proxy where the test needs to see traffic)."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from shadowvault.errors import NotFoundError
from shadowvault.repo.backend_s3 import S3Backend
from shadowvault.repo.backend_s3_client import MAX_CONNECTIONS, S3Client
from shadowvault.repo.backend_s3_url import parse_s3_url
from tests.fixtures.s3_faults import FaultProxy
from tests.fixtures.s3_server import S3Server

MiB = 1 << 20


def make_backend(url: str, cache: Path | None = None, **options: object) -> S3Backend:
    location = parse_s3_url(url)
    client = S3Client(location, backoff_base=0.01)
    backend = S3Backend(location, client=client, cache_root=cache, use_cache=cache is not None, **options)  # type: ignore[arg-type]
    backend.ensure_bucket()
    return backend


def raw_client(server: S3Server):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")


@pytest.fixture
def proxy(s3_env: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_env.port) as made:
        yield made


def test_large_packs_go_up_in_parts_and_leave_no_upload_behind(s3_env: S3Server, tmp_path: Path) -> None:
    url = s3_env.url()
    backend = make_backend(url, multipart_threshold=6 * MiB, part_size=5 * MiB)
    data = random.Random(1).randbytes(12 * MiB + 123)
    path = backend.temp_path()
    path.write_bytes(data)
    backend.save_file("data/ab/abcd", path)
    assert backend.load("data/ab/abcd") == data
    assert not path.exists()
    counts = backend.s3.requests
    assert (counts["CreateMultipartUpload"], counts["UploadPart"], counts["CompleteMultipartUpload"]) == (
        1,
        3,
        1,
    )
    location = parse_s3_url(url)
    assert raw_client(s3_env).list_multipart_uploads(Bucket=location.bucket).get("Uploads", []) == []


def test_content_addressed_objects_are_never_overwritten(s3_env: S3Server) -> None:
    """If-None-Match: * on everything named by its hash; a second write of the name is a no-op."""
    backend = make_backend(s3_env.url())
    backend.save("index/aa", b"the original")
    backend.save("index/aa", b"something else")
    assert backend.load("index/aa") == b"the original"
    backend.save("sessions/me", b"first")
    backend.save("sessions/me", b"second")  # sessions are re-written whole
    assert backend.load("sessions/me") == b"second"
    assert backend.conditional_writes


def test_listing_follows_every_page(s3_env: S3Server) -> None:
    backend = make_backend(s3_env.url())
    backend.list_page_size = 7
    names = {f"data/{n % 4:02x}/{n:04x}" for n in range(45)}
    for name in names:
        backend.save(name, name.encode())
    before = backend.s3.requests["ListObjectsV2"]
    assert {info.name for info in backend.list("data/")} == names
    assert backend.s3.requests["ListObjectsV2"] - before == 7  # 45 objects, 7 a page


def test_a_ranged_read_fetches_only_its_range(s3_env: S3Server, proxy: FaultProxy) -> None:
    backend = make_backend(proxy.url(f"sv-range-{os.getpid()}"))
    data = random.Random(2).randbytes(8 * MiB)
    backend.save("data/cd/cdef", data)
    sent = proxy.bytes_to_clients
    assert backend.load("data/cd/cdef", 5 * MiB + 17, 300_000) == data[5 * MiB + 17 : 5 * MiB + 17 + 300_000]
    assert backend.load("data/cd/cdef", -4) == data[-4:]
    assert proxy.bytes_to_clients - sent < 300_000 + 16_384


def test_connections_are_bounded(s3_env: S3Server, proxy: FaultProxy) -> None:
    backend = make_backend(proxy.url(f"sv-bound-{os.getpid()}"))

    def writer(n: int) -> None:
        for i in range(6):
            backend.save(f"data/{n:02x}/{n:02x}{i:04x}", random.randbytes(200_000))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(list(backend.list("data/"))) == 24 * 6
    assert 1 < proxy.max_in_flight <= MAX_CONNECTIONS


def test_the_cache_serves_immutable_objects_and_survives_damage(s3_env: S3Server, tmp_path: Path) -> None:
    url = s3_env.url()
    writer = make_backend(url, tmp_path / "cache-a")
    writer.save("index/i1", b"index bytes" * 100)
    writer.save("data/ab/ab01", random.Random(3).randbytes(1 * MiB))
    writer.save("config", b"config may be re-written: never cached")

    reader = make_backend(url, tmp_path / "cache-b")
    for _ in range(3):
        assert reader.load("index/i1") == b"index bytes" * 100
        assert reader.load("data/ab/ab01", 1000, 5000) == random.Random(3).randbytes(1 * MiB)[1000:6000]
        assert reader.load("config") == b"config may be re-written: never cached"
    assert reader.s3.requests["GetObject"] == 2 + 3  # index and tree range once, config every time

    assert reader.cache is not None
    for entry in (tmp_path / "cache-b").rglob("*"):
        if entry.is_file():
            entry.write_bytes(b"\0" * entry.stat().st_size)  # a damaged cache is refetched, not believed
    assert reader.load("index/i1") == b"index bytes" * 100
    assert reader.s3.requests["GetObject"] == 6

    writer.remove("index/i1")
    assert writer.cache is not None and writer.cache.get("whole/index/i1") is None


def test_the_cache_is_bounded(s3_env: S3Server, tmp_path: Path) -> None:
    backend = make_backend(s3_env.url(), tmp_path / "cache", cache_max_bytes=400_000)
    for n in range(40):
        backend.save(f"snapshots/{n:04x}", random.randbytes(30_000))
    total = sum(p.stat().st_size for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert total <= 400_000
    assert backend.load("snapshots/0000") is not None  # evicted entries are fetched again


def test_small_packs_this_host_wrote_are_read_from_the_cache(s3_env: S3Server, tmp_path: Path) -> None:
    """A backup's tree pack is small: the next backup on this host reads its trees without S3."""
    url = s3_env.url()
    writer = make_backend(url, tmp_path / "cache")
    pack = random.Random(4).randbytes(300_000)
    path = writer.temp_path()
    path.write_bytes(pack)
    writer.save_file("data/ef/ef01", path)

    reader = make_backend(url, tmp_path / "cache")  # the next process on this host
    for offset in range(0, 300_000, 7_000):
        assert reader.load("data/ef/ef01", offset, 5_000) == pack[offset : offset + 5_000]
    assert reader.s3.requests["GetObject"] == 0
    reader.remove("data/ef/ef01")
    with pytest.raises(NotFoundError):
        reader.load("data/ef/ef01", 0, 10)


def test_the_cache_and_scratch_directories_are_private(s3_env: S3Server, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        backend = make_backend(s3_env.url(), tmp_path / "cache")
        backend.save("keys/k1", b"a wrapped key")
        backend.temp_path().write_bytes(b"a pack being built")
    finally:
        os.umask(old)
    repo_dir = next((tmp_path / "cache" / "s3").iterdir())
    for directory in (repo_dir, repo_dir / "objects", repo_dir / "tmp"):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    (entry,) = (p for p in (repo_dir / "objects").rglob("*") if p.is_file())
    assert entry.stat().st_mode & 0o777 == 0o600
