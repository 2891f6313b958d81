"""Blobs: round trips through chunking, compression and encryption; dedup; many threads at once."""

from __future__ import annotations

import io
import os
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowvault.errors import IntegrityError, NotFoundError
from shadowvault.repo.format import BlobType
from shadowvault.repo.repository import Repository
from tests.repo.helpers import PASSWORD, pack_files


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory):
    repo = Repository.init(tmp_path_factory.mktemp("blobs") / "repo", PASSWORD, pack_size=1 << 20)
    yield repo
    repo.close()


def _content(size: int, seed: int, compressible: bool) -> bytes:
    rnd = random.Random(seed)
    if compressible:
        words = [rnd.randbytes(8).hex().encode() for _ in range(64)]
        out = bytearray()
        while len(out) < size:
            out += rnd.choice(words)
        return bytes(out[:size])
    return rnd.randbytes(size)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.one_of(st.integers(0, 4096), st.integers(0, 20 << 20)),
    seed=st.integers(0, 2**32),
    compressible=st.booleans(),
)
def test_file_round_trip_any_size(shared_repo, size, seed, compressible):
    data = _content(size, seed, compressible)
    chunks = list(shared_repo.chunk_file(io.BytesIO(data)))
    assert b"".join(chunks) == data
    assert all(len(c) <= shared_repo.config.chunker.max for c in chunks)
    ids = [shared_repo.save_blob(BlobType.DATA, c) for c in chunks]
    shared_repo.flush()
    assert b"".join(shared_repo.load_blob(i) for i in ids) == data


def test_reopened_repository_reads_everything(tmp_path):
    data = os.urandom(20 << 20) + bytes(3 << 20)
    with Repository.init(tmp_path / "repo", PASSWORD, pack_size=1 << 20) as repo:
        source = tmp_path / "src"
        source.write_bytes(data)
        with ThreadPoolExecutor(2) as pool:  # as a backup does: chunk here, seal in the workers
            ids = list(pool.map(lambda chunk: repo.save_blob(BlobType.DATA, chunk), repo.chunk_file(source)))
        repo.flush()
        assert len(repo.index_files()) >= 2  # an index file every 8 packs while the session runs
    assert len(list((tmp_path / "repo" / "index").iterdir())) == 1  # merged into one at close
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        assert b"".join(repo.load_blob(i) for i in ids) == data
        assert repo.blob_size(ids[0]) == len(repo.load_blob(ids[0]))
        with pytest.raises(NotFoundError):
            repo.load_blob(b"\0" * 32)


def test_same_data_is_stored_once(tmp_path):
    data = os.urandom(3 << 20)
    with Repository.init(tmp_path / "repo", PASSWORD) as repo:
        first = [repo.save_blob(BlobType.DATA, c) for c in repo.chunker.chunk_bytes(data)]
        second = [repo.save_blob(BlobType.DATA, c) for c in repo.chunker.chunk_bytes(data)]
        assert first == second
        assert repo.stats.blobs_added == len(first)
    stored = sum(p.stat().st_size for p in pack_files(tmp_path / "repo"))
    assert len(data) < stored < len(data) + 4096
    with Repository.open(tmp_path / "repo", PASSWORD, write=True) as repo:
        for c in repo.chunker.chunk_bytes(data):
            repo.save_blob(BlobType.DATA, c)
        assert repo.stats.blobs_added == 0  # the next session deduplicates against the index
    assert sum(p.stat().st_size for p in pack_files(tmp_path / "repo")) == stored


def test_compressible_data_is_compressed(tmp_path):
    data = b"shadowvault " * 200_000
    with Repository.init(tmp_path / "repo", PASSWORD) as repo:
        ids = [repo.save_blob(BlobType.DATA, c) for c in repo.chunker.chunk_bytes(data)]
    assert sum(p.stat().st_size for p in pack_files(tmp_path / "repo")) < len(data) // 20
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        assert b"".join(repo.load_blob(i) for i in ids) == data


def test_many_threads_save_the_same_and_different_blobs(tmp_path):
    blobs = [os.urandom(random.Random(i).randint(0, 300_000)) for i in range(200)]
    with Repository.init(tmp_path / "repo", PASSWORD, pack_size=2 << 20) as repo:
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda b: repo.save_blob(BlobType.DATA, b), blobs + blobs))
        assert ids[:200] == ids[200:]
        assert repo.stats.blobs_added == len(set(ids))
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        assert [repo.load_blob(i) for i in ids[:200]] == blobs


def test_each_thread_fills_a_pack_of_its_own(tmp_path):
    """No lock is held while a blob is appended: a pack is written by one thread only, so the blobs
    of one pack were all saved by the same thread (and every blob loads back)."""
    saved_by: dict[bytes, int] = {}

    def save_many(thread: int) -> None:
        for _ in range(30):
            blob_id = repo.save_blob(BlobType.DATA, os.urandom(100_000))
            saved_by[blob_id] = thread

    with Repository.init(tmp_path / "repo", PASSWORD, pack_size=1 << 20) as repo, ThreadPoolExecutor(4) as p:
        list(p.map(save_many, range(4)))
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        packs = {repo.lookup(blob_id).pack for blob_id in saved_by}
        for pack in packs:
            owners = {saved_by[b] for b in saved_by if repo.lookup(b).pack == pack}
            assert len(owners) == 1, pack
        assert all(len(repo.load_blob(b)) == 100_000 for b in saved_by)


def test_a_damaged_pack_is_an_integrity_error_naming_the_blob(tmp_path):
    with Repository.init(tmp_path / "repo", PASSWORD) as repo:
        blob_id = repo.save_blob(BlobType.DATA, os.urandom(1000))
    [pack] = pack_files(tmp_path / "repo")
    raw = bytearray(pack.read_bytes())
    raw[100] ^= 0x01
    pack.write_bytes(bytes(raw))
    with (
        Repository.open(tmp_path / "repo", PASSWORD) as repo,
        pytest.raises(IntegrityError, match=f"blob {blob_id.hex()[:16]}"),
    ):
        repo.load_blob(blob_id)


def test_a_file_is_cut_at_the_same_points_whatever_way_it_is_read(shared_repo, tmp_path):
    """Small files are cut in memory, large ones streamed: the cut points (and so deduplication
    against earlier backups) must not depend on which path a file took, nor on its read offset."""
    chunker = shared_repo.chunker
    largest = chunker.params.max
    data = random.Random(5).randbytes(2 * largest + 12345)
    for size in (0, 100, chunker.params.min, chunker.params.min + 1, largest, largest + 1, len(data)):
        content = data[:size]
        expected = list(chunker.chunk_bytes(content))
        assert b"".join(expected) == content
        assert list(chunker.chunk_file(io.BytesIO(content))) == expected
        path = tmp_path / "f"
        path.write_bytes(b"head" + content)
        with open(path, "rb", buffering=0) as f:
            f.read(4)
            assert list(chunker.chunk_file(f)) == expected
    assert len(list(chunker.chunk_bytes(data))) >= 3


def test_index_files_merged_at_close_are_each_no_larger_than_the_limit(tmp_path, monkeypatch):
    """A session's many small index files become few at close, filled up to the per-file limit one
    after the other (never all of them decoded at once), and every blob is still found."""
    import shadowvault.repo.master_index as master_index

    monkeypatch.setattr(master_index, "INDEX_FILE_BLOBS", 40)
    monkeypatch.setattr(master_index, "PACKS_PER_INDEX", 1)
    blobs = [os.urandom(3000) for _ in range(120)]
    with Repository.init(tmp_path / "repo", PASSWORD, pack_size=16 << 10) as repo:
        ids = [repo.save_blob(BlobType.DATA, blob) for blob in blobs]
        repo.flush()
        written = len(repo.index_files())
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        files = repo.index_files()
        sizes = [sum(len(pack.blobs) for pack in repo.load_index_file(name).packs) for name in files]
        assert len(files) < written and sum(sizes) == len(blobs)
        assert all(size <= 40 for size in sizes)
        assert [repo.load_blob(blob_id) for blob_id in ids] == blobs


def test_only_small_index_files_are_merged_at_close(tmp_path, monkeypatch):
    """Packs of large files make index files of a few blobs: those are merged at close. A file of
    SMALL_INDEX_FILE blobs or more stays as written (merging it cost the end of a first backup a
    decoded file and its new encoding at once, for no count of files worth having)."""
    import shadowvault.repo.master_index as master_index

    monkeypatch.setattr(master_index, "INDEX_FILE_BLOBS", 40)
    monkeypatch.setattr(master_index, "SMALL_INDEX_FILE", 10)
    monkeypatch.setattr(master_index, "PACKS_PER_INDEX", 1)
    many_small = [os.urandom(900) for _ in range(60)]  # ~17 to a 16 KiB pack: files of 10 or more
    few_large = [os.urandom(5000) for _ in range(12)]  # 3 to a pack: files of fewer
    with Repository.init(tmp_path / "repo", PASSWORD, pack_size=16 << 10) as repo:
        ids = [repo.save_blob(BlobType.DATA, blob) for blob in many_small]
        repo.flush()
        ids += [repo.save_blob(BlobType.DATA, blob) for blob in few_large]
        repo.flush()
        sizes = {
            name: sum(len(p.blobs) for p in repo.load_index_file(name).packs) for name in repo.index_files()
        }
        large_files = {name for name, size in sizes.items() if size >= 10}
        small_files = set(sizes) - large_files
        assert len(large_files) >= 2 and len(small_files) >= 3
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        files = set(repo.index_files())
        assert large_files <= files, "a file of SMALL_INDEX_FILE blobs or more was rewritten"
        assert not small_files & files and len(files - large_files) < len(small_files)
        assert [repo.load_blob(blob_id) for blob_id in ids] == many_small + few_large


def test_index_files_written_as_packs_of_small_blobs_fill_stay_within_the_limit(tmp_path, monkeypatch):
    """Packs of small files hold many blobs each: the index file a running session writes every
    few packs is written as soon as it holds the per-file limit, and split at it (eight such packs
    once made files of 160k blobs that every reader decoded whole)."""
    import shadowvault.repo.master_index as master_index

    monkeypatch.setattr(master_index, "INDEX_FILE_BLOBS", 40)
    blobs = [os.urandom(900) for _ in range(400)]
    with Repository.init(tmp_path / "repo", PASSWORD, pack_size=16 << 10) as repo:
        ids = [repo.save_blob(BlobType.DATA, blob) for blob in blobs]
        repo.flush()
        files = repo.index_files()  # as the session wrote them, before its merge at close
        sizes = [sum(len(pack.blobs) for pack in repo.load_index_file(name).packs) for name in files]
        assert sum(sizes) == len(blobs) and max(sizes) <= 40
        assert len(files) >= len(blobs) // 40
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        assert [repo.load_blob(blob_id) for blob_id in ids] == blobs


def test_a_chunk_of_text_around_random_bytes_is_compressed_and_noise_is_not(shared_repo):
    """A file region overwritten with compressed data leaves chunks of random bytes and text side
    by side: such a chunk is stored compressed (its text was once stored raw), pure noise is not
    compressed at all, and both read back."""
    words = [b"backup", b"restore", b"snapshot", b"volume", b"shadow", b"writer", b"provider", b"pack"]
    rng = random.Random(5)
    text = b" ".join(rng.choice(words) for _ in range(200_000))[: 600 << 10]
    mixed = os.urandom(700 << 10) + text  # random where two samples once looked: start and middle
    noise = os.urandom(1 << 20)
    stored_before = shared_repo.stats.stored_bytes_added
    mixed_id = shared_repo.save_blob(BlobType.DATA, mixed)
    stored_mixed = shared_repo.stats.stored_bytes_added - stored_before
    noise_id = shared_repo.save_blob(BlobType.DATA, noise)
    stored_noise = shared_repo.stats.stored_bytes_added - stored_before - stored_mixed
    shared_repo.flush()
    assert stored_mixed < len(mixed) - (400 << 10), "the text part is compressed"
    assert len(noise) <= stored_noise < len(noise) + 64, "noise is stored as it is (plus the seal)"
    assert shared_repo.load_blob(mixed_id) == mixed
    assert shared_repo.load_blob(noise_id) == noise
