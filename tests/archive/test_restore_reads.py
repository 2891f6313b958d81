"""A restore reads each pack it needs once, not each blob: what a repository on object storage pays for."""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from pathlib import Path

from shadowvault.repo.pack import pack_name
from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD, archive, assert_same_tree, restore

IN_PROCESS = {"processes": 0}  # reads are counted at the backend: restore workers read pack files


def count_pack_reads(repo: Repository) -> collections.Counter[str]:
    """Count the backend reads of each pack (the backend object every layer of the repository shares)."""
    reads: collections.Counter[str] = collections.Counter()
    load: Callable[..., bytes] = repo.backend.load

    def counting(name: str, offset: int = 0, length: int | None = None) -> bytes:
        if name.startswith("data/"):
            reads[name] += 1
        return load(name, offset, length)

    repo.backend.load = counting  # type: ignore[method-assign]
    return reads


def make_tree(src: Path) -> None:
    """Many small files in a few directories, files sharing content, and two files of several blobs."""
    shared = os.urandom(3000)
    for d in range(4):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(40):
            (src / f"d{d}" / f"f{i}").write_bytes(os.urandom(500 + 37 * i))
        for i in range(5):
            (src / f"d{d}" / f"same{i}").write_bytes(shared)
    (src / "big").write_bytes(os.urandom(3 << 20))
    (src / "big-again").write_bytes((src / "big").read_bytes() + os.urandom(1 << 20))


def test_each_pack_is_read_once(tmp_path: Path):
    src = tmp_path / "src"
    make_tree(src)
    repo = Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF, pack_size=64 << 10)
    with repo:
        root, _ = archive(repo, src)
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        from shadowvault.archive.listing import walk_tree

        content_packs = {
            pack_name(location.pack)
            for _, node in walk_tree(repo, root, b"/")
            for blob_id in node.content
            if (location := repo.lookup(blob_id)) is not None
        }
        assert len(content_packs) > 5, "the test needs content spread over several packs"
        reads = count_pack_reads(repo)
        stats = restore(repo, root, tmp_path / "target", verify=True, **IN_PROCESS)
    assert stats.errors == []
    assert_same_tree(src, tmp_path / "target" / str(src).lstrip("/"))
    content_reads = {name: n for name, n in reads.items() if name in content_packs}
    assert content_reads == dict.fromkeys(content_packs, 1), "every pack holding file content read once"


def test_a_damaged_copy_is_replaced_by_another_copy(tmp_path: Path):
    """Two backups that did not see each other's index store the same blobs twice; when the copy a
    grouped read picks is damaged, the file comes from the other copy, and nothing fails."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_bytes(os.urandom(5000))
    (src / "other").write_bytes(os.urandom(7000))
    Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF).close()
    first = Repository.open(tmp_path / "repo", PASSWORD, write=True)
    second = Repository.open(tmp_path / "repo", PASSWORD, write=True)
    with first, second:
        root, _ = archive(first, src)
        archive(second, src)
    packs = list((tmp_path / "repo" / "data").glob("*/*"))
    assert len(packs) >= 3, "each backup wrote its own data pack"
    with Repository.open(tmp_path / "repo", PASSWORD) as repo:
        from shadowvault.archive.restore import find_node

        node = find_node(repo, root, f"{src}/file")
        assert node is not None
        location = repo.lookup(node.content[0])
        assert location is not None
        pack = tmp_path / "repo" / pack_name(location.pack)
        os.chmod(pack, 0o600)
        with open(pack, "r+b") as f:
            f.seek(location.offset + location.length // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x01]))
        stats = restore(repo, root, tmp_path / "target")
    assert stats.errors == []
    assert_same_tree(src, tmp_path / "target" / str(src).lstrip("/"))
