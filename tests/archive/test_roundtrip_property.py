"""Property test: any tree (odd names, sizes from 0 to several chunks, holes, hard links) round-trips."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowvault.repo.chunker import AVG_SIZE
from shadowvault.repo.repository import Repository
from tests.archive.helpers import archive, assert_same_tree, new_repo, restore
from tests.fixtures.loopfs import LoopFs, loop_filesystem

CHUNK = AVG_SIZE  # the chunker's average parameter
SIZES = [0, 1, 4095, 4096, 65_537, CHUNK - 1, CHUNK + 7, 3 * CHUNK + 12_345, 9 * CHUNK]


@pytest.fixture(scope="module")
def fs() -> Iterator[LoopFs]:
    with loop_filesystem("ext4", size=512 << 20) as mounted:
        yield mounted


@pytest.fixture(scope="module")
def repo(fs: LoopFs) -> Iterator[Repository]:
    with new_repo(fs.mount / "repo") as made:
        yield made


names = st.binary(min_size=1, max_size=24).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b"..")
)
files = st.tuples(
    st.sampled_from(SIZES), st.integers(0, 3), st.booleans()
)  # size, seed (repeats dedup), holes
trees = st.recursive(
    st.dictionaries(names, files, max_size=4),
    lambda children: st.dictionaries(names, st.one_of(files, children), max_size=4),
    max_leaves=10,
)


def write_tree(base: bytes, tree: dict, made: list[bytes]) -> None:
    os.mkdir(base)
    for name, spec in tree.items():
        path = base + b"/" + name
        if isinstance(spec, dict):
            write_tree(path, spec, made)
            continue
        size, seed, holes = spec
        data = random.Random(seed).randbytes(size)
        with open(path, "wb") as f:
            if holes and size > 8192:
                f.write(data[:100])
                f.seek(size - 100)
                f.write(data[-100:])
            else:
                f.write(data)
        made.append(path)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, link_picks=st.lists(st.integers(0, 100), max_size=3))
def test_any_tree_round_trips(fs, repo, tree, link_picks):
    work = os.fsencode(tempfile.mkdtemp(dir=fs.mount, prefix="case-"))
    try:
        src = work + b"/src"
        made: list[bytes] = []
        write_tree(src, tree, made)
        for i, pick in enumerate(link_picks):
            if made:
                os.link(made[pick % len(made)], src + b"/link-%d" % i)
        root, stats = archive(repo, Path(os.fsdecode(src)))
        assert stats.errors == []
        target = work + b"/restored"
        result = restore(repo, root, Path(os.fsdecode(target)), verify=True)
        assert result.errors == []
        assert_same_tree(src, target + src)
    finally:
        shutil.rmtree(work)
