"""Large files cut in place (repo/chunk_windows.py): the same chunks as the stream chunker, bit for bit
(deduplication against older snapshots depends on it), and a window is read into again only after
every chunk of it was released."""

from __future__ import annotations

import io
import os
import random
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowvault.repo.chunk_windows import WINDOWS, ChunkWindows
from shadowvault.repo.chunker import Chunker
from shadowvault.repo.format import ChunkerParams

# small parameters: many chunks, and many windows, in a few hundred KiB
PARAMS = ChunkerParams(min=2 << 10, avg=8 << 10, max=32 << 10, seed=7)


class Trickle(io.RawIOBase):
    """A stream that returns at most `most` bytes a read (as a pipe or a sparse file's segment may)."""

    def __init__(self, data: bytes, most: int) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._most = most

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._most, len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def _content(size: int, seed: int, text: bool) -> bytes:
    rng = random.Random(seed)
    if text:  # long runs without a cut: chunks at the largest size, carried across windows
        return bytes(rng.choice(b"ab") for _ in range(size // 64)) * 64 + bytes(size % 64)
    return rng.randbytes(size)


def _in_place(windows: ChunkWindows, stream: io.RawIOBase) -> list[bytes]:
    chunks = []
    for view, window in windows.chunks(stream):
        chunks.append(bytes(view))
        windows.release(window)
    return chunks


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(min_value=0, max_value=600 << 10),
    seed=st.integers(min_value=0, max_value=1 << 30),
    text=st.booleans(),
    most=st.sampled_from([1 << 30, 40 << 10, 4099]),
    window=st.sampled_from([None, (32 << 10) + 1, 100 << 10]),
)
def test_the_chunks_are_the_stream_chunkers_whatever_the_window_and_reads(
    size: int, seed: int, text: bool, most: int, window: int | None
):
    data = _content(size, seed, text)
    expected = list(Chunker(PARAMS).chunk_file(io.BytesIO(data)))
    got = _in_place(ChunkWindows(PARAMS, window), Trickle(data, most))
    assert got == expected
    assert b"".join(got) == data


def test_the_default_parameters_cut_a_large_file_as_before(tmp_path):
    """The repository's own parameters (1 MiB average, 8 MiB largest), on 40 MiB of mixed content."""
    params = ChunkerParams(min=512 << 10, avg=1 << 20, max=8 << 20, seed=12345)
    data = os.urandom(20 << 20) + bytes(9 << 20) + os.urandom(11 << 20)
    path = tmp_path / "large"
    path.write_bytes(data)
    expected = list(Chunker(params).chunk_file(path))
    with open(path, "rb", buffering=0) as f:
        assert _in_place(ChunkWindows(params), f) == expected


def test_a_window_is_read_into_again_only_once_its_chunks_are_released():
    """Chunks held by the blob threads keep their window: the reader waits for one, and what a held
    view shows never changes under it."""
    data = _content(400 << 10, 3, text=False)
    windows = ChunkWindows(PARAMS)
    held: list[tuple[memoryview, bytes, object]] = []
    chunks: list[bytes] = []
    letting_go = threading.Event()
    lock = threading.Lock()

    def read_all() -> None:
        for view, window in windows.chunks(io.BytesIO(data)):
            chunks.append(bytes(view))
            with lock:
                if not letting_go.is_set():
                    held.append((view, bytes(view), window))
                    continue
            windows.release(window)

    thread = threading.Thread(target=read_all, daemon=True)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive(), "the reader waits for a window while every chunk is held"
    with lock:
        assert len({id(window) for *_, window in held}) == WINDOWS
        for view, copy, _window in held:
            assert bytes(view) == copy, "a held chunk is never overwritten"
        letting_go.set()
        for *_, window in held:
            windows.release(window)  # type: ignore[arg-type]
    thread.join(5)
    assert not thread.is_alive(), "a released window is read into again"
    assert b"".join(chunks) == data


def test_an_abandoned_stream_gives_its_windows_back():
    windows = ChunkWindows(PARAMS)
    for _ in range(5):  # each stream stopped after one chunk, released: never a wedged window
        reader = windows.chunks(io.BytesIO(_content(300 << 10, 1, text=False)))
        _view, window = next(reader)
        reader.close()
        windows.release(window)
    assert len(_in_place(windows, io.BytesIO(b"x" * 100))) == 1


def test_a_window_smaller_than_the_largest_chunk_is_refused():
    with pytest.raises(ValueError):
        ChunkWindows(PARAMS, PARAMS.max)


def test_a_large_file_that_fails_midway_leaves_the_windows_to_the_next(tmp_path, monkeypatch):
    """A large file that cannot be read any further after a few windows (EIO) is that file's error;
    the windows it held are given back, so every later large file is read: the backup never waits
    forever for a window."""
    from shadowvault.archive.sparse_extents import SegmentReader
    from tests.archive.helpers import archive, new_repo, restore

    source = tmp_path / "src"
    source.mkdir()
    names = ("a", "b", "c")
    for name in names:
        (source / name).write_bytes(os.urandom(30 << 20))  # several windows each
    real = SegmentReader.readinto
    calls = [0]

    def failing(self, buffer):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 3:  # the first file's third window
            raise OSError(5, "Input/output error")
        return real(self, buffer)

    monkeypatch.setattr(SegmentReader, "readinto", failing)
    repo = new_repo(tmp_path / "repo")
    done = threading.Event()
    result: list[object] = []

    def run() -> None:
        result.append(archive(repo, source, seal_processes=0))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(120), "the backup waits for a window the failed file never gave back"
    root, stats = result[0]  # type: ignore[misc]
    assert len(stats.errors) == 1 and "input/output error" in stats.errors[0][1], stats.errors
    failed = os.path.basename(stats.errors[0][0])
    restore(repo, root, tmp_path / "out")
    restored = tmp_path / "out" / source.relative_to("/")
    for name in set(names) - {failed}:
        assert (restored / name).read_bytes() == (source / name).read_bytes()
