"""Unnamed files (archive/unnamed_files.py): a finished file gets its name by descriptor, and never
takes a name something else holds, whether the kernel names the descriptor itself or /proc does."""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowvault.archive import unnamed_files
from shadowvault.archive.unnamed_files import create_unnamed, link_unnamed
from tests.fixtures.loopfs import loop_filesystem


@pytest.fixture(scope="module")
def ext4() -> Iterator[Path]:
    with loop_filesystem("ext4") as fs:
        yield fs.mount


def _unnamed(directory: int, data: bytes) -> int:
    fd = create_unnamed(directory, 0o640)
    assert fd is not None, "ext4 has O_TMPFILE"
    os.pwrite(fd, data, 0)
    return fd


def _named(where: Path) -> list[str]:
    """Two unnamed files named in `where`, and a third refused a name that is taken; the names."""
    where.mkdir()
    directory = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
    first, second = _unnamed(directory, b"first\n"), _unnamed(directory, b"second\n")
    try:
        assert os.listdir(where) == [], "unnamed files have no name"
        link_unnamed(first, directory, b"one")
        link_unnamed(second, directory, b"two")
        with pytest.raises(FileExistsError):
            link_unnamed(second, directory, b"one")
    finally:
        for fd in (first, second, directory):
            os.close(fd)
    assert (where / "one").read_bytes() == b"first\n"
    assert (where / "two").read_bytes() == b"second\n"
    assert (where / "one").stat().st_mode & 0o777 == 0o640
    assert (where / "one").stat().st_nlink == 1
    return sorted(os.listdir(where))


def test_a_finished_file_is_named_by_its_descriptor(ext4: Path):
    assert _named(ext4 / "own") == ["one", "two"]
    assert unnamed_files._linkat is not None, "root names a descriptor itself (no /proc path)"


def test_where_the_kernel_refuses_the_descriptor_the_proc_path_names_it(
    ext4: Path, monkeypatch: pytest.MonkeyPatch
):
    calls: list[bytes] = []

    def refused(_fd: int, _path: bytes, _dir_fd: int, name: bytes, flags: int) -> int:
        assert flags == unnamed_files.AT_EMPTY_PATH
        calls.append(name)
        ctypes.set_errno(errno.EPERM)  # what a kernel before 6.10 says without CAP_DAC_READ_SEARCH
        return -1

    monkeypatch.setattr(unnamed_files, "_linkat", refused)
    assert _named(ext4 / "proc") == ["one", "two"]
    assert calls == [b"one"], "asked once; every later file goes through /proc"
    assert unnamed_files._linkat is None
