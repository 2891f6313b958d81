"""A hostile repository: names a crafted tree gives one inode but not one type or content.

A restore links a later name of an inode to the first one it restored. A tree whose symlink and
file share (device, inode) made the file's name a symlink out of the target; a FIFO or device node
and a file made the file a FIFO or device; a file and a symlink made the symlink a file; and
`--verify` passed the linked names over. Each name must come out as its own tree says, warned
about, with nothing outside the target touched; real hard links still come out as one inode.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import time
from pathlib import Path

import pytest

from shadowvault.archive.dump import write_tar
from shadowvault.archive.restore import Restorer
from shadowvault.archive.restore_entries import EntryError, EntryWriter, Overwrite, RestoreStats, TargetDir
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Node
from tests.archive.helpers import FAST_KDF, PASSWORD, archive
from tests.archive.test_hostile_restore import Crafter, disk_state

CONTENT = b"hello, world\n"  # 13 bytes, the file's blob
LINK = {"inode": 77, "nlink": 2, "device": 1, "mode": 0o644, "uid": 0, "gid": 0}


def _symlink(c: Crafter, name: bytes, outside: Path) -> Node:
    return Node(name=name, type="symlink", link_target=os.fsencode(outside / "victim"), **LINK)


def _fifo(c: Crafter, name: bytes, outside: Path) -> Node:
    return Node(name=name, type="fifo", **LINK)


def _chardev(c: Crafter, name: bytes, outside: Path) -> Node:
    return Node(name=name, type="chardev", rdev=os.makedev(1, 3), **LINK)  # /dev/null's


def _file(c: Crafter, name: bytes, outside: Path) -> Node:
    return c.file(name, CONTENT, **LINK)


def _other_file(c: Crafter, name: bytes, outside: Path) -> Node:
    return c.file(name, b"other content", **LINK)


PAIRS = {  # hl1, then hl2 of the same inode
    "symlink-then-file": (_symlink, _file),
    "fifo-then-file": (_fifo, _file),
    "chardev-then-file": (_chardev, _file),
    "file-then-symlink": (_file, _symlink),
    "file-then-other-file": (_other_file, _file),
}

MODES = {"file": stat.S_IFREG, "symlink": stat.S_IFLNK, "fifo": stat.S_IFIFO, "chardev": stat.S_IFCHR}


def _crafted(tmp_path: Path, pair: str) -> tuple[Path, bytes, list[Node], Path]:
    """A repository whose one snapshot holds the pair (and a plain file), and the directory outside."""
    outside = tmp_path / "base" / "outside"
    outside.mkdir(parents=True)
    (tmp_path / "base" / "target").mkdir()
    (outside / "victim").write_bytes(b"victim")
    first, second = PAIRS[pair]
    repo_path = tmp_path / "repo"
    with Repository.init(repo_path, PASSWORD, kdf_params=FAST_KDF) as repo:
        c = Crafter(repo)
        nodes = [first(c, b"hl1", outside), second(c, b"hl2", outside)]
        root = c.root(*nodes, c.file(b"plain", b"plain", mode=0o644, uid=0, gid=0))
        repo.save_snapshot(Snapshot(time=time.time(), host="hostile", paths=["/"], tree=root))
    return repo_path, root, nodes, outside


def _assert_as_the_tree_says(target: Path, nodes: list[Node]) -> None:
    """Every name is of its own type, a file holds its own blob's bytes, a symlink its own target."""
    for node in nodes:
        path = target / os.fsdecode(node.name)
        st = os.lstat(path)
        assert stat.S_IFMT(st.st_mode) == MODES[node.type], (node.name, node.type, oct(st.st_mode))
        if node.type == "file":
            assert st.st_nlink == 1
        if node.name == b"hl2" and node.type == "file":
            assert path.read_bytes() == CONTENT
        if node.type == "symlink":
            assert os.fsencode(os.readlink(path)) == node.link_target
    assert (target / "plain").read_bytes() == b"plain"


@pytest.mark.parametrize("pair", list(PAIRS))
def test_names_of_one_inode_of_another_type_or_content_are_restored_on_their_own(tmp_path: Path, pair: str):
    repo_path, root, nodes, outside = _crafted(tmp_path, pair)
    base, target = outside.parent, outside.parent / "target"
    before = disk_state(base, {target})
    with Repository.open(repo_path, PASSWORD) as repo:
        stats = Restorer(repo, target, verify=True).restore(root)
    assert disk_state(base, {target}) == before
    assert (outside / "victim").read_bytes() == b"victim"
    assert stats.errors == []
    _assert_as_the_tree_says(target, nodes)
    [(path, why)] = stats.warnings
    assert path == b"/hl2" and "not hard-linked to the snapshot's /hl1" in why and "\n" not in why
    files = sum(node.type == "file" for node in nodes) + 1
    assert (stats.files, stats.others, stats.verified) == (files, 3 - files, files)


@pytest.mark.parametrize("pair", ["symlink-then-file", "file-then-symlink"])
def test_restore_verify_on_the_command_line_names_the_name_and_verifies_every_file(
    tmp_path: Path, pair: str, cli
):
    repo_path, _root, nodes, outside = _crafted(tmp_path, pair)
    base, target = outside.parent, outside.parent / "target"
    before = disk_state(base, {target})
    env = {
        "SHADOWVAULT_REPOSITORY": str(repo_path),
        "SHADOWVAULT_PASSWORD": PASSWORD,
        "SHADOWVAULT_NO_DAEMON": "1",
    }
    done = cli("restore", "latest", "--target", target, "--verify", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert disk_state(base, {target}) == before
    _assert_as_the_tree_says(target, nodes)
    messages = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [(m["message_type"], m["path"]) for m in messages] == [("warning", "/hl2")]
    summary = next(json.loads(line) for line in done.stdout.splitlines() if '"summary"' in line)
    assert summary["verified"] == summary["files"] == 2


def test_hard_linked_files_of_one_content_are_still_one_inode_and_verified(tmp_path: Path):
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        c = Crafter(repo)
        root = c.root(c.file(b"hl1", CONTENT, **LINK), c.file(b"hl2", CONTENT, **LINK))
        stats = Restorer(repo, tmp_path / "target", verify=True).restore(root)
    first, second = (os.lstat(tmp_path / "target" / name) for name in ("hl1", "hl2"))
    assert stat.S_ISREG(second.st_mode) and first.st_ino == second.st_ino and second.st_nlink == 2
    assert (tmp_path / "target" / "hl2").read_bytes() == CONTENT
    assert (stats.errors, stats.warnings, stats.files, stats.verified) == ([], [], 2, 2)


def test_hard_linked_symlinks_and_fifos_a_backup_records_are_still_linked(tmp_path: Path):
    """A backup records the inode of every entry: two names of one symlink, or of one FIFO, are
    of one type and one target, and a restore links them as it did."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_bytes(CONTENT)
    os.symlink("file", src / "sym")
    os.link(src / "sym", src / "sym2", follow_symlinks=False)
    os.mkfifo(src / "fifo")
    os.link(src / "fifo", src / "fifo2")
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        root, _ = archive(repo, src)
        stats = Restorer(repo, tmp_path / "target").restore(root)
    restored = Path(str(tmp_path / "target") + str(src))
    assert (stats.errors, stats.warnings) == ([], [])
    for first, second in (("sym", "sym2"), ("fifo", "fifo2")):
        one, two = os.lstat(restored / first), os.lstat(restored / second)
        assert one.st_ino == two.st_ino and two.st_nlink == 2, first
    assert os.readlink(restored / "sym2") == "file"


def test_a_link_to_a_first_name_that_is_not_of_the_entrys_type_is_refused(tmp_path: Path):
    """What is under a first name is the target's (a symlink planted there after it was made):
    what a link makes must be of the type the tree gives the later name."""
    os.symlink(tmp_path / "outside", tmp_path / "first")
    root = TargetDir(None, b"", b"/", None, fd=os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY))
    entries = EntryWriter(root, RestoreStats(), overwrite=Overwrite.NEVER, numeric_owner=False)
    try:
        with pytest.raises(EntryError, match="not a file"):
            entries.link((b"first",), root, b"tmp", Node(name=b"second", type="file"))
    finally:
        os.close(root.fd)


def test_dump_links_in_its_tar_only_names_of_one_content(tmp_path: Path):
    """`dump` made a later name of the inode a tar link to the first: the other content was lost."""
    with Repository.init(tmp_path / "repo", PASSWORD, kdf_params=FAST_KDF) as repo:
        c = Crafter(repo)
        root = c.root(
            c.file(b"a1", CONTENT, **LINK),
            c.file(b"a2", b"other content", **LINK),
            c.file(b"a3", CONTENT, **LINK),
        )
        out = io.BytesIO()
        write_tar(repo, root, "/", out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        members = {m.name.rsplit("/", 1)[-1]: m for m in tar.getmembers()}
        assert members["a3"].islnk() and members["a3"].linkname.endswith("a1")
        assert members["a2"].isfile() and tar.extractfile(members["a2"]).read() == b"other content"
