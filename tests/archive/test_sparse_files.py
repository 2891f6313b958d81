"""Holes cost nothing: a sparse file is backed up by its data, restored sparse, read as zeros.

One ext4 filesystem on a loop device holds the sources, the repository and the restores; one
backup of it is shared by the module. The source: a 1 GiB file with three data extents at odd
offsets, a file whose last 37 MiB are a hole, a file of 6 MiB of real (written) zero bytes, and a
small file. What a user checks: the restored bytes, that the restored files are sparse
again (st_blocks), that the backup read the data and not the holes, and that the restore decrypted
no more than the data (the repository's read counters).
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest

from shadowvault.archive.dump import write_file
from shadowvault.archive.file_content import content_layout, content_pieces, read_piece
from shadowvault.archive.restore import find_node
from shadowvault.archive.sparse_extents import Segment, file_segments
from shadowvault.archive.walker import WalkStats
from shadowvault.mount.content import Blobs, FileContent
from shadowvault.repo.check import check
from shadowvault.repo.prune import prune
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Node
from shadowvault.repo.zero_blobs import zero_run_sizes
from tests.archive.helpers import PASSWORD, archive, new_repo, restore
from tests.fixtures.loopfs import LoopFs, loop_filesystem

MiB = 1 << 20
GiB = 1 << 30
EXTENTS = [(12_345, 200_000), (300 * MiB + 777, 1_500_000), (GiB - 3 * MiB + 5, MiB)]  # (offset, length)


@dataclass
class Backed:
    fs: LoopFs
    src: Path
    repo_path: Path
    root: bytes
    stats: WalkStats
    stored_bytes: int
    data: dict[str, bytes]  # what was written where, per file: for hashes without reading twice


def write_sparse(path: Path, size: int, extents: list[tuple[int, int]]) -> None:
    with open(path, "wb") as f:
        for offset, length in extents:
            f.seek(offset)
            f.write(os.urandom(length))
        f.truncate(size)


def data_ranges(path: Path) -> list[tuple[int, int]]:
    """Where the kernel says the file has data (SEEK_DATA/SEEK_HOLE): elsewhere it reads as zeros."""
    ranges, position, size = [], 0, os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            position = os.lseek(fd, start, os.SEEK_HOLE)
            ranges.append((start, position))
    finally:
        os.close(fd)
    return ranges


def assert_same_bytes(a: Path, b: Path) -> None:
    """Byte for byte, reading what either file holds as data (both read as zeros everywhere else):
    hashing 1 GiB of holes would cost seconds of test time."""
    assert os.path.getsize(a) == os.path.getsize(b), (a, b)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for start, end in data_ranges(a) + data_ranges(b):
            fa.seek(start)
            fb.seek(start)
            assert fa.read(end - start) == fb.read(end - start), f"{b} differs in [{start}, {end})"


def file_hash(path: Path) -> bytes:
    hasher = blake3.blake3()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(16 * MiB):
            hasher.update(block)
    return hasher.digest()


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


@pytest.fixture(scope="module")
def backed() -> Iterator[Backed]:
    with loop_filesystem("ext4", size=512 * MiB) as fs:
        src = fs.mount / "src"
        src.mkdir()
        write_sparse(src / "sparse-1g", GiB, EXTENTS)
        write_sparse(src / "hole-at-end", 40 * MiB, [(0, 3 * MiB)])
        (src / "zeros").write_bytes(bytes(6 * MiB))  # written zeros: allocated, not a hole
        (src / "small").write_bytes(b"a small file\n")
        os.sync()
        repo_path = fs.mount / "repo"
        with new_repo(repo_path) as repo:
            root, stats = archive(repo, src)
            stored = repo.stats.stored_bytes_added
            repo.save_snapshot(Snapshot(time=time.time(), host="test", paths=[str(src)], tree=root))
        yield Backed(fs, src, repo_path, root, stats, stored, {})


def node_of(repo: Repository, backed: Backed, name: str) -> Node:
    return find_node(repo, backed.root, f"{backed.src}/{name}")


def test_backup_reads_the_data_not_the_holes(backed: Backed):
    assert allocated(backed.src / "sparse-1g") < 8 * MiB, "the fixture's file is sparse"
    assert backed.stats.errors == [] and backed.stats.warnings == []
    # data: 2.7 MiB in the sparse file (plus the short holes read around it), 3 MiB, 6 MiB of zeros
    assert backed.stats.bytes_read < 16 * MiB, backed.stats.bytes_read
    assert backed.stats.bytes_holes > GiB - 8 * MiB + 37 * MiB - MiB
    # the random data is stored; zeros and holes are a few tiny blobs of zeros
    assert 5 * MiB < backed.stored_bytes < 6 * MiB, backed.stored_bytes


def test_restore_leaves_holes_and_restores_every_byte(backed: Backed):
    target = backed.fs.mount / "restored"
    with Repository.open(backed.repo_path, PASSWORD) as repo:
        before = repo.read_stats.bytes
        stats = restore(repo, backed.root, target, verify=True)
        decoded = repo.read_stats.bytes - before
    assert stats.errors == []
    assert stats.verified == 4
    # only the data is fetched and decrypted: no zero blob, no hole
    assert decoded < 8 * MiB, decoded
    out = target / str(backed.src).lstrip("/")
    for name in ("sparse-1g", "hole-at-end", "zeros", "small"):
        assert_same_bytes(backed.src / name, out / name)
    assert file_hash(out / "hole-at-end") == file_hash(backed.src / "hole-at-end")
    assert allocated(out / "sparse-1g") < 8 * MiB, "the restored 1 GiB file is sparse again"
    assert allocated(out / "hole-at-end") < 4 * MiB, "the hole at the end is a hole again"
    assert allocated(out / "zeros") >= 6 * MiB, "written zeros come back allocated, as they were"


def test_an_older_reader_reads_the_zero_blobs_as_any_blob(backed: Backed):
    """The format contract: zero blobs are stored blobs of zeros, so a reader that does not know them
    (an older version, another implementation) loads every id and gets the same bytes."""
    with Repository.open(backed.repo_path, PASSWORD) as repo:
        node = node_of(repo, backed, "hole-at-end")
        plain = b"".join(repo.load_blob(blob_id) for blob_id in node.content)
        tail = [repo.zero_blobs.size_of(blob_id) for blob_id in node.content[-6:]]
    assert blake3.blake3(plain).digest() == file_hash(backed.src / "hole-at-end")
    assert tail == zero_run_sizes(37 * MiB) == [8 * MiB] * 4 + [4 * MiB, MiB], "the hole: zero blob ids"


def test_content_readers_return_zeros_for_holes_without_loading(backed: Backed):
    """The mount's reader and the archive's content helper serve holes from memory."""
    with Repository.open(backed.repo_path, PASSWORD) as repo:
        node = node_of(repo, backed, "sparse-1g")
        opened = FileContent(Blobs(repo), node.content)
        assert opened.size == GiB
        before = repo.read_stats.blobs
        assert opened.read(500 * MiB, 128 << 10) == bytes(128 << 10)
        assert opened.read(GiB - 4096, 8192) == bytes(4096)
        assert repo.read_stats.blobs == before, "a read inside holes decodes nothing"
        with open(backed.src / "sparse-1g", "rb") as f:
            for offset, length in EXTENTS:  # across each data extent's edges
                f.seek(offset - 1000)
                assert opened.read(offset - 1000, length + 2000) == f.read(length + 2000)
        pieces = content_layout(repo, node.content)
        assert sum(p.length for p in pieces) == GiB
        assert sum(p.length for p in pieces if p.zeros) > GiB - 8 * MiB
        with open(backed.src / "sparse-1g", "rb") as f:
            for piece in pieces:
                if not piece.zeros:
                    f.seek(piece.offset)
                    assert read_piece(repo, piece) == f.read(piece.length)
        streamed = blake3.blake3()
        for part in content_pieces(repo, node_of(repo, backed, "hole-at-end").content):
            streamed.update(part)
    assert streamed.digest() == file_hash(backed.src / "hole-at-end")


class Sink(io.RawIOBase):
    """Counts and hashes what `dump` writes."""

    def __init__(self, *, hashing: bool = True) -> None:
        super().__init__()
        self.hasher, self.hashing, self.size = blake3.blake3(), hashing, 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        if self.hashing:
            self.hasher.update(data)
        self.size += len(data)
        return len(data)


def test_dump_writes_holes_as_zeros_without_loading_them(backed: Backed):
    with Repository.open(backed.repo_path, PASSWORD) as repo:
        node = node_of(repo, backed, "hole-at-end")
        out = Sink()
        write_file(repo, node, b"/hole-at-end", out)
        sparse = node_of(repo, backed, "sparse-1g")
        before = repo.read_stats.blobs
        assert write_file(repo, sparse, b"/sparse-1g", Sink(hashing=False)) == GiB
        data_blobs = [b for b in sparse.content if repo.zero_blobs.size_of(b) is None]
        assert repo.read_stats.blobs - before == len(data_blobs), "only the data blobs are loaded"
    assert out.hasher.digest() == file_hash(backed.src / "hole-at-end")


def test_prune_and_check_keep_and_verify_the_zero_blobs(backed: Backed):
    with Repository.open(backed.repo_path, PASSWORD, write=True, kind="prune") as repo:
        prune(repo)
    with Repository.open(backed.repo_path, PASSWORD) as repo:
        zero_ids = {b for b in node_of(repo, backed, "sparse-1g").content if repo.zero_blobs.size_of(b)}
        assert zero_ids and all(repo.has_blob(b) for b in zero_ids), "referenced zero blobs are kept"
        report = check(repo, read_data_fraction=1.0)
    assert report.errors == [] and report.affected_snapshots == {}


def test_an_unchanged_sparse_file_is_not_read_and_a_changed_one_reads_its_data(backed: Backed):
    src = backed.fs.mount / "src2"
    src.mkdir()
    write_sparse(src / "disk.img", 256 * MiB, [(64 * MiB + 3, MiB)])
    with Repository.open(backed.repo_path, PASSWORD, write=True) as repo:
        first, _ = archive(repo, src)
        _, unchanged = archive(repo, src, parent_tree=first)
        with open(src / "disk.img", "r+b") as f:
            f.seek(200 * MiB + 11)
            f.write(os.urandom(5000))
        changed_root, changed = archive(repo, src, parent_tree=first)
        assert unchanged.bytes_read == 0 and unchanged.files_unmodified == 1
        assert changed.files_changed == 1 and 0 < changed.bytes_read < 4 * MiB, changed.bytes_read
        target = backed.fs.mount / "restored2"
        stats = restore(repo, changed_root, target, verify=True)
    assert stats.errors == []
    out = target / str(src).lstrip("/") / "disk.img"
    assert_same_bytes(src / "disk.img", out)
    assert allocated(out) < 4 * MiB


def test_segments_merge_short_holes_and_read_to_the_end(backed: Backed):
    path = backed.fs.mount / "segments"
    write_sparse(path, 64 * MiB, [(8192, 4096), (100_000, 4096), (32 * MiB, 4096)])
    fd = os.open(path, os.O_RDONLY)
    try:
        segments = list(file_segments(fd, 64 * MiB, min_hole=512 << 10))
    finally:
        os.close(fd)
    # the holes before 8192 and 100000 are short: read with the data; the rest are holes, and the
    # last hole runs to the end of the file
    assert segments == [
        Segment(0, 104_096 + (-104_096 % 4096)),
        Segment(104_096 + (-104_096 % 4096), 32 * MiB, hole=True),
        Segment(32 * MiB, 32 * MiB + 4096),
        Segment(32 * MiB + 4096, 64 * MiB, hole=True),
    ]


def test_restore_into_xfs_leaves_holes(backed: Backed):
    """Another filesystem's allocator (XFS preallocates past the end of a file being written)."""
    with loop_filesystem("xfs") as xfs, Repository.open(backed.repo_path, PASSWORD) as repo:
        node = node_of(repo, backed, "sparse-1g")
        stats = restore(repo, backed.root, xfs.mount, subpath=f"{backed.src}/sparse-1g", verify=True)
        assert stats.errors == [] and stats.verified == 1
        out = xfs.mount / "sparse-1g"
        assert os.path.getsize(out) == node.size == GiB
        assert_same_bytes(backed.src / "sparse-1g", out)
        assert allocated(out) < 8 * MiB, allocated(out)


def test_a_copy_with_its_holes_written_out_adds_nothing(backed: Backed):
    """Written zeros are cut as holes are: a full copy of a sparse file has the same content (the
    same chunks, the same zero runs), so backing it up stores nothing new."""
    src = backed.fs.mount / "copies"
    src.mkdir()
    extents = [(i * 9 * MiB + 4097 * (i + 1), 2 * MiB + 777 * i) for i in range(6)]
    write_sparse(src / "sparse", 64 * MiB, extents)
    with open(src / "sparse", "rb") as f, open(src / "full", "wb") as out:
        out.write(f.read())  # every hole written out as zeros
    assert allocated(src / "full") >= 64 * MiB > 4 * allocated(src / "sparse")
    with Repository.open(backed.repo_path, PASSWORD, write=True) as repo:
        root, stats = archive(repo, src)
        tree = {node.name: node for node in repo.load_tree(find_node(repo, root, str(src)).subtree).nodes}
    assert tree[b"full"].content == tree[b"sparse"].content
    assert not tree[b"full"].sparse and tree[b"sparse"].sparse
    assert stats.bytes_holes > 40 * MiB and stats.bytes_read > 64 * MiB


def test_the_restore_summary_gives_the_files_size_and_the_data_written(ext4: LoopFs, env, cli):
    """A 64 MiB sparse file came back as "4.0 KiB": the summary gives the files' size, and the data
    written beside it when the holes made it less; --json has both."""
    src = ext4.mount / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.truncate(64 << 20)
        f.seek(32 << 20)
        f.write(b"data")
    assert cli("backup", "--provider", "none", "-q", src, env=env).returncode == 0
    text = cli("restore", "latest", "--target", ext4.mount / "out", env=env)
    assert text.returncode == 0, text.stderr
    assert "1 file, 4 dirs, 0 others, 64.0 MiB (1.0 KiB written) in " in text.stdout, text.stdout
    as_json = cli("restore", "latest", "--target", ext4.mount / "again", "--json", env=env)
    summary = [json.loads(line) for line in as_json.stdout.splitlines()][-1]
    assert (summary["total_bytes"], summary["bytes_written"]) == (64 << 20, 1024)  # the data's KiB
