"""A restore reads each pack it needs once, however many files need its blobs and wherever they lie in
the tree: on object storage every read is a request (issue 15: 133 requests where restic made 23)."""

from __future__ import annotations

import collections
import os
import resource
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shadowvault.archive.listing import walk_tree
from shadowvault.repo.pack import pack_name
from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD, archive, assert_same_tree, restore

IN_PROCESS = {"processes": 0}  # reads are counted at the backend: restore workers read pack files

PACK_SIZE = 8 << 20  # larger than one 4 MiB span: a pack read in pieces is caught


@dataclass
class Backed:
    src: Path
    repo: Path
    root: bytes
    content_packs: set[str]


@dataclass
class Reads:
    """Backend reads of data packs, per pack."""

    per_pack: collections.Counter[str]


def count_pack_reads(repo: Repository) -> Reads:
    reads = Reads(collections.Counter())
    load: Callable[..., bytes] = repo.backend.load
    lock = threading.Lock()

    def counting(name: str, offset: int = 0, length: int | None = None) -> bytes:
        if name.startswith("data/"):
            with lock:
                reads.per_pack[name] += 1
        return load(name, offset, length)

    repo.backend.load = counting  # type: ignore[method-assign]
    return reads


def make_tree(src: Path) -> None:
    """700 small files (a batch held 256 before restores were planned per pack), the first
    directory's files repeated (same bytes) in the last one, so the packs holding them are needed at
    both ends of the walk; two large files sharing most of their blobs; a few modes."""
    for d in range(7):
        (src / f"d{d}").mkdir(parents=True)
    for i in range(100):
        data = os.urandom(700 + 53 * i)
        (src / "d0" / f"f{i:03d}").write_bytes(data)
        (src / "d6" / f"copy{i:03d}").write_bytes(data)
        os.chmod(src / "d6" / f"copy{i:03d}", 0o640 if i % 2 else 0o755)
    for d in range(1, 6):
        for i in range(100):
            (src / f"d{d}" / f"f{i:03d}").write_bytes(os.urandom(900 + 31 * i))
    big = os.urandom(7 << 20)
    (src / "big").write_bytes(big)
    (src / "d3" / "big-and-more").write_bytes(big + os.urandom(1 << 20))


@pytest.fixture(scope="module")
def backed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backed]:
    top = tmp_path_factory.mktemp("restore-plan")
    src = top / "src"
    make_tree(src)
    with Repository.init(top / "repo", PASSWORD, kdf_params=FAST_KDF, pack_size=PACK_SIZE) as repo:
        root, _ = archive(repo, src)
    with Repository.open(top / "repo", PASSWORD) as repo:
        content_packs = {
            pack_name(location.pack)
            for _, node in walk_tree(repo, root, b"/")
            for blob_id in node.content
            if (location := repo.lookup(blob_id)) is not None
        }
    assert len(content_packs) >= 2, "the test needs content spread over several packs"
    yield Backed(src, top / "repo", root, content_packs)


def test_every_pack_is_read_once_for_the_whole_restore(backed: Backed, tmp_path: Path):
    with Repository.open(backed.repo, PASSWORD) as repo:
        reads = count_pack_reads(repo)
        stats = restore(repo, backed.root, tmp_path / "target", verify=True, **IN_PROCESS)
    assert stats.errors == []
    assert_same_tree(backed.src, tmp_path / "target" / str(backed.src).lstrip("/"))
    content_reads = {name: n for name, n in reads.per_pack.items() if name in backed.content_packs}
    assert content_reads == dict.fromkeys(backed.content_packs, 1), "each pack holding file content read once"


def test_a_restore_of_one_directory_reads_only_the_packs_it_needs_once(backed: Backed, tmp_path: Path):
    with Repository.open(backed.repo, PASSWORD) as repo:
        reads = count_pack_reads(repo)
        stats = restore(repo, backed.root, tmp_path / "target", subpath=f"{backed.src}/d6", **IN_PROCESS)
    assert stats.errors == []
    assert_same_tree(backed.src / "d6", tmp_path / "target")
    content_reads = [n for name, n in reads.per_pack.items() if name in backed.content_packs]
    assert content_reads and set(content_reads) == {1}


def test_a_restore_holds_few_descriptors_however_many_files_it_writes(backed: Backed, tmp_path: Path):
    """A file of one blob is created, written and finished by the worker that read its blob: a
    restore of hundreds of files works under a descriptor limit far below their number."""
    open_now = len(os.listdir("/proc/self/fd"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with Repository.open(backed.repo, PASSWORD) as repo:
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 64, hard))
        try:
            stats = restore(repo, backed.root, tmp_path / "target")
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert stats.errors == []
    assert_same_tree(backed.src, tmp_path / "target" / str(backed.src).lstrip("/"))
