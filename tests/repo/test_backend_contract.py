"""The storage contract (repo/backend.py): every backend passes the same tests.

Atomic saves (a reader sees nothing or a whole object, a session file is replaced whole), ranged
loads, stat, recursive listing that skips hidden and temp files, idempotent removal, missing
objects, concurrent writers, temp files. Every backend in BACKENDS passes; "s3" runs against moto's
server on 127.0.0.1 (tests/fixtures/s3_server.py).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shadowvault.errors import NotFoundError, RepositoryError, UsageError
from shadowvault.repo.backend import Backend
from shadowvault.repo.backend_local import LocalBackend
from shadowvault.repo.backend_memory import MemoryBackend
from shadowvault.repo.backend_s3 import S3Backend
from shadowvault.repo.storage import create_backend, open_backend

BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], Backend]] = {
    "local": lambda tmp, _: LocalBackend.create(tmp / "repo"),
    "memory": lambda tmp, _: MemoryBackend(),
    "s3": lambda tmp, request: S3Backend.create(request.getfixturevalue("s3_url")),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = BACKENDS[request.param](tmp_path, request)
    yield made
    made.close()


DATA = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable


def test_a_saved_object_loads_whole_and_by_range(backend: Backend) -> None:
    backend.save("index/aa", DATA)
    assert backend.load("index/aa") == DATA
    assert backend.load("index/aa", 100) == DATA[100:]
    assert backend.load("index/aa", 100, 50) == DATA[100:150]
    assert backend.load("index/aa", -4) == DATA[-4:]  # a pack's trailer
    assert backend.load("index/aa", -40, 8) == DATA[-40:-32]
    assert backend.load("index/aa", -len(DATA) - 10) == DATA  # never before the start
    assert backend.load("index/aa", len(DATA) + 5) == b""
    assert backend.load("index/aa", len(DATA) - 3, 10) == DATA[-3:]  # short at the end


def test_ranged_loads_of_packs(backend: Backend) -> None:
    """Packs (data/) are read by range many times; the local backend caches their open files."""
    backend.save("data/ab/abcd", DATA)
    for offset in (0, 1, 255, 4096, len(DATA) - 1):
        assert backend.load("data/ab/abcd", offset, 7) == DATA[offset : offset + 7]
    assert backend.load("data/ab/abcd", -4) == DATA[-4:]


def test_closing_the_local_backend_closes_the_packs_every_thread_kept_open(tmp_path: Path) -> None:
    """A reading thread that stays alive (an idle pool's) must not keep packs open past the close:
    a pruned pack's space would stay taken, the repository's filesystem busy."""
    backend = LocalBackend.create(tmp_path / "repo")
    backend.save("data/ab/abcd", DATA)
    read, close_seen = threading.Event(), threading.Event()

    def reader() -> None:
        backend.load("data/ab/abcd", 4, 4)
        read.set()
        close_seen.wait(30)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert read.wait(30)
        backend.load("data/ab/abcd", 8, 4)  # this thread's own cache too
        assert len(_descriptors_of(tmp_path / "repo" / "data")) == 2
        backend.close()
        assert _descriptors_of(tmp_path / "repo" / "data") == []
    finally:
        close_seen.set()
        thread.join()
    assert backend.load("data/ab/abcd", 0, 4) == DATA[:4], "a closed backend opens again on a read"
    backend.close()


def _descriptors_of(under: Path) -> list[str]:
    held = (os.readlink(fd) for fd in Path("/proc/self/fd").iterdir() if fd.is_symlink())
    return [path for path in held if path.startswith(f"{under}/")]


def test_stat_gives_size_and_a_storage_time(backend: Backend) -> None:
    before = time.time()
    backend.save("snapshots/s1", DATA)
    info = backend.stat("snapshots/s1")
    assert (info.name, info.size) == ("snapshots/s1", len(DATA))
    assert before - 60 < info.mtime < time.time() + 60


def test_saving_an_existing_name_replaces_it_whole(backend: Backend) -> None:
    backend.save("sessions/me", b"first version, long" * 100)
    backend.save("sessions/me", b"second")
    assert backend.load("sessions/me") == b"second"
    assert backend.stat("sessions/me").size == 6
    assert [i.name for i in backend.list("sessions/")] == ["sessions/me"]


def test_a_reader_never_sees_a_partial_object(backend: Backend) -> None:
    versions = [bytes([n]) * (2 << 20) for n in (1, 2)]
    backend.save("sessions/busy", versions[0])
    stop = threading.Event()
    failures: list[str] = []

    def write() -> None:
        for n in range(40):
            backend.save("sessions/busy", versions[n % 2])
        stop.set()

    writer = threading.Thread(target=write)
    writer.start()
    reads = 0
    while not stop.is_set() or reads < 5:
        seen = backend.load("sessions/busy")
        reads += 1
        if seen not in versions:
            failures.append(f"read {len(seen)} bytes starting {seen[:1]!r}")
    writer.join()
    assert not failures


def test_listing_is_recursive_under_a_prefix_and_skips_hidden_and_temp(backend: Backend) -> None:
    for name in ("data/ab/ab01", "data/cd/cd02", "index/i1", "index/.hidden", "data/.sync/x", "keys/k"):
        backend.save(name, name.encode())
    scratch = backend.temp_path()
    scratch.write_bytes(b"a pack being built")
    listed = {i.name: i.size for i in backend.list("data/")}
    assert listed == {"data/ab/ab01": 12, "data/cd/cd02": 12}
    assert [i.name for i in backend.list("index/")] == ["index/i1"]
    assert list(backend.list("damage/")) == []
    everything = {i.name for i in backend.list("")}
    assert everything == {"data/ab/ab01", "data/cd/cd02", "index/i1", "keys/k"}


def test_temp_files_are_listed_and_removed_by_name(backend: Backend) -> None:
    first, second = backend.temp_path(), backend.temp_path()
    assert first != second
    first.write_bytes(b"left by a killed writer")
    temp = list(backend.list_temp())
    assert [(i.name, i.size) for i in temp] == [(f"tmp/{first.name}", 23)]
    backend.remove(temp[0].name)
    assert list(backend.list_temp()) == []
    assert not first.exists()


def test_save_file_stores_a_temp_file_and_consumes_it(backend: Backend) -> None:
    path = backend.temp_path()
    path.write_bytes(DATA)
    backend.save_file("data/ef/ef03", path)
    assert backend.load("data/ef/ef03") == DATA
    assert not path.exists()
    assert list(backend.list_temp()) == []


def test_removal_is_idempotent(backend: Backend) -> None:
    backend.save("snapshots/gone", b"x")
    backend.remove("snapshots/gone")
    backend.remove("snapshots/gone")
    backend.remove("snapshots/never-was")
    assert list(backend.list("snapshots/")) == []
    with pytest.raises(NotFoundError):
        backend.load("snapshots/gone")


def test_missing_objects_raise_not_found(backend: Backend) -> None:
    with pytest.raises(NotFoundError):
        backend.load("config")
    with pytest.raises(NotFoundError):
        backend.load("data/00/0000", 10, 20)
    with pytest.raises(NotFoundError):
        backend.stat("index/nothing")


@pytest.mark.parametrize("name", ["../outside", "/etc/passwd", "data/../../x", ""])
def test_names_outside_the_repository_are_refused(backend: Backend, name: str) -> None:
    with pytest.raises(RepositoryError, match="invalid object name"):
        backend.save(name, b"x")
    with pytest.raises(RepositoryError, match="invalid object name"):
        backend.load(name)
    with pytest.raises(RepositoryError, match="invalid object name"):
        backend.remove(name)


def test_concurrent_writers_of_distinct_and_same_names(backend: Backend) -> None:
    def writer(n: int) -> None:
        for i in range(25):
            backend.save(f"data/{n:02x}/{n:02x}{i:04x}", f"{n}:{i}".encode() * 1000)
            backend.save("sessions/shared", f"writer {n} round {i}".encode() * 1000)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    listed = {i.name for i in backend.list("data/")}
    assert len(listed) == 8 * 25
    for n in range(8):
        for i in range(25):
            assert backend.load(f"data/{n:02x}/{n:02x}{i:04x}") == f"{n}:{i}".encode() * 1000
    shared = backend.load("sessions/shared")
    assert shared in {f"writer {n} round 24".encode() * 1000 for n in range(8)}


def test_declared_properties(backend: Backend) -> None:
    assert backend.describe()
    assert 0 <= backend.clock_margin <= 600
    assert backend.exposed_to_others() == []  # a new repository is private


# ---------------------------------------------------------------- locations (S3 URLs: test_s3_locations.py)


def test_open_backend_takes_a_path_or_a_file_url(tmp_path: Path) -> None:
    made = create_backend(tmp_path / "repo")
    made.save("config", b"c")
    for location in (tmp_path / "repo", str(tmp_path / "repo"), f"file://{tmp_path}/repo"):
        assert open_backend(location).load("config") == b"c"


def test_open_backend_names_the_supported_locations(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"ftp://host/x.*a local path, a file:// URL, or s3:"):
        open_backend("ftp://host/x")
    with pytest.raises(UsageError, match=r"'s3://bucket/x' is not an S3 repository URL: write s3:http"):
        open_backend("s3://bucket/x")
    with pytest.raises(UsageError, match="not a local file:// URL"):
        open_backend("file://otherhost/srv/repo")
    with pytest.raises(RepositoryError, match="does not exist"):
        open_backend(tmp_path / "absent")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RepositoryError, match="not a Shadowvault repository"):
        open_backend(f"file://{tmp_path}/plain")


def test_create_backend_wants_an_empty_place(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_bytes(b"x")
    with pytest.raises(RepositoryError, match="is not empty"):
        create_backend(tmp_path / "full")
    (tmp_path / "afile").write_bytes(b"x")
    with pytest.raises(RepositoryError, match="exists and is not a directory"):
        create_backend(tmp_path / "afile")
    made = create_backend(f"file://{tmp_path}/new")
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [
        "data",
        "index",
        "keys",
        "sessions",
        "snapshots",
        "tmp",
    ]
    assert made.exposed_to_others() == []


def test_a_backend_says_whether_its_reads_wait_on_a_network(backend: Backend, request) -> None:
    """Restore reads with one thread from local storage and several from remote storage."""
    assert backend.remote is (request.node.callspec.params["backend"] == "s3")
