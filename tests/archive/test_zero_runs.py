"""Written zeros are found where they start, however the chunker happens to read.

A copy of a sparse file must be cut as the sparse file is (the same chunks, the same zero runs), so
where a segment's data ends may not depend on the sizes of the reads the chunker asks for: those
follow the content-defined cut points of the data before, which differ from file to file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shadowvault.archive.sparse_extents import MIN_HOLE, SegmentReader

DATA_END = 102_400  # an aligned block boundary that is not a multiple of the sampling step
CONTENT = os.urandom(100_000) + bytes(2_400) + bytes(200_000) + os.urandom(50_000)
READ_SIZES = [1_000, 2_400, 4_096, 30_000, 65_536, 70_000, 98_304, 100_000, 102_400, 1 << 20]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("zeros") / "file"
    path.write_bytes(CONTENT)
    return path


def read_until_zeros(path: Path, sizes: list[int]) -> tuple[bytes, int | None]:
    """What a reader gives when asked for `sizes` in turn (then 1 MiB at a time) until it stops."""
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = SegmentReader(fd, 0, None, min_hole=MIN_HOLE)
        given = bytearray()
        for size in sizes + [1 << 20] * 4:
            buffer = bytearray(size)
            got = reader.readinto(buffer)
            if not got:
                break
            given += buffer[:got]
        return bytes(given), reader.zero_run
    finally:
        os.close(fd)


@pytest.mark.parametrize("first", READ_SIZES)
@pytest.mark.parametrize("second", READ_SIZES)
def test_the_run_of_zeros_starts_where_it_does_whatever_the_read_sizes(source: Path, first: int, second: int):
    given, zero_run = read_until_zeros(source, [first, second])
    assert zero_run == DATA_END, (first, second)
    assert given == CONTENT[:DATA_END]


def test_a_short_run_of_zeros_is_data(tmp_path: Path):
    path = tmp_path / "short"
    content = os.urandom(DATA_END) + bytes(MIN_HOLE - 4096) + os.urandom(10_000)
    path.write_bytes(content)
    for first in READ_SIZES:
        assert read_until_zeros(path, [first, 4096]) == (content, None)
