"""The local cache seen from the command line: a no-change backup into S3 reads its index, snapshot
and trees from the cache (a handful of requests, counted by the proxy), and deleting the cache
between backups costs requests, nothing else."""

from __future__ import annotations

import collections
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.repo.cache_dir import scratch_error
from tests.fixtures.s3_faults import FaultProxy
from tests.fixtures.s3_server import S3Server
from tests.repo.helpers import PASSWORD


@pytest.fixture
def proxy(s3_env: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_env.port) as made:
        yield made


def _cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHADOWVAULT_PASSWORD": PASSWORD, "SHADOWVAULT_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "shadowvault.cli.launch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _requests_of(proxy: FaultProxy, *args: str, cache: Path) -> collections.Counter[str]:
    before = collections.Counter(proxy.requests)
    done = _cli(*args, cache=cache)
    assert done.returncode == 0, done.stderr
    after = collections.Counter(proxy.requests)
    after.subtract(before)
    return +after


def test_a_no_change_backup_makes_few_requests_and_the_cache_is_safe_to_delete(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    for d in range(6):
        for f in range(20):
            path = src / f"dir{d}" / f"file{f}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{d}/{f} ".encode() * (100 + 50 * f))
    url, cache = proxy.url(f"sv-cache-{os.getpid()}"), tmp_path / "cache"
    assert _cli("init", "--repo", url, cache=cache).returncode == 0
    first = _requests_of(proxy, "backup", "--repo", url, "--provider", "none", str(src), cache=cache)
    unchanged = _requests_of(proxy, "backup", "--repo", url, "--provider", "none", str(src), cache=cache)
    # config (rewritable, never cached) is the only object read; lists of keys, sessions, index,
    # damage and snapshots; the session, the snapshot
    assert unchanged["GET object"] <= 1, unchanged
    assert sum(unchanged.values()) <= 15, unchanged
    assert sum(unchanged.values()) < sum(first.values())

    shutil.rmtree(cache)
    cold = _requests_of(proxy, "backup", "--repo", url, "--provider", "none", str(src), cache=cache)
    assert cold["GET object"] > unchanged["GET object"]  # index, snapshots and trees fetched again
    target = tmp_path / "restored"
    assert _cli("restore", "latest", "--repo", url, "--target", str(target), cache=cache).returncode == 0
    restored = target / str(src).lstrip("/")
    for path in src.rglob("*.txt"):
        assert (restored / path.relative_to(src)).read_bytes() == path.read_bytes()

    # A cache that cannot be written is named as such: the packs are built there, on this host, and
    # the repository is not what is full or read-only (the error said "repository storage is full:
    # ... prune" for a full local disk).
    (src / "new.txt").write_bytes(b"something new to pack")
    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_bytes(b"")
    done = _cli("backup", "--repo", url, "--provider", "none", str(src), cache=not_a_dir)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert f"{not_a_dir}/s3/" in line and "where packs are built before they are uploaded" in line, line
    assert "cannot be written (Not a directory): set SHADOWVAULT_CACHE_DIR" in line, line


def test_a_full_scratch_disk_is_not_called_full_storage() -> None:
    full = scratch_error(OSError(errno.ENOSPC, "No space left on device"), Path("/c/s3/ab/tmp"))
    assert str(full) == (
        "/c/s3/ab/tmp, where packs are built before they are uploaded, is full: free space there or set"
        " SHADOWVAULT_CACHE_DIR to another directory"
    )
