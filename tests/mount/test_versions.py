"""`shadowvault versions PATH`: the distinct versions of one path across snapshots, and bringing one
back next to the file or over it, whole or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

from shadowvault.archive.tree_paths import find_node
from shadowvault.repo.pack import pack_name
from shadowvault.repo.repository import Repository
from tests.archive.helpers import PASSWORD, new_repo

ENV = {"SHADOWVAULT_PASSWORD": PASSWORD, "SHADOWVAULT_NO_DAEMON": "1"}
V1 = b"first draft\n" * 1000
V2 = b"second draft, longer\n" * 3000


def _write(path: Path, data: bytes, mode: int, colour: bytes, mtime_ns: int) -> None:
    path.write_bytes(data)
    os.chmod(path, mode)
    os.setxattr(path, "user.colour", colour)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_versions_are_listed_and_brought_back(ext4, tmp_path: Path, cli):
    repo = tmp_path / "repo"
    new_repo(repo).close()
    docs = ext4.mount / "docs"
    docs.mkdir()
    report = docs / "report.txt"
    link = docs / "current"

    def backup() -> str:
        done = cli("backup", "--repo", repo, "--provider", "none", "--json", docs, env=ENV)
        assert done.returncode == 0, done.stderr
        return next(m for m in _lines(done.stdout) if m.get("message_type") == "summary")["snapshot_id"]

    _write(report, V1, 0o640, b"blue", 1_600_000_000_000_000_001)
    os.symlink("report.txt", link)
    s1 = backup()
    _write(report, V2, 0o600, b"red", 1_600_000_100_000_000_002)
    s2 = backup()
    s3 = backup()  # nothing changed: the same version
    _write(report, V1, 0o640, b"blue", 1_600_000_200_000_000_003)  # back to the first content
    os.unlink(link)
    os.symlink("elsewhere", link)
    s4 = backup()
    report.write_bytes(b"today's unsaved work")

    listed = cli("versions", "--repo", repo, report, "--json", env=ENV)
    assert listed.returncode == 0, listed.stderr
    versions = _lines(listed.stdout)
    assert [(v["number"], v["size"], v["snapshots"]) for v in versions] == [
        (1, len(V1), [s1, s4]),
        (2, len(V2), [s2, s3]),
    ]
    assert versions[0]["snapshot_id"] == s1 and versions[0]["path"] == str(report)
    table = cli("versions", "--repo", repo, report, env=ENV)
    assert table.returncode == 0 and f"versions of {report}" in table.stdout
    assert s1[:8] in table.stdout and s2[:8] in table.stdout

    links = _lines(cli("versions", "--repo", repo, link, "--json", env=ENV).stdout)
    assert [(v["type"], v["snapshots"]) for v in links] == [("symlink", [s1, s2, s3]), ("symlink", [s4])]

    brought = cli("versions", "--repo", repo, report, "--restore", "2", env=ENV)
    assert brought.returncode == 0, brought.stderr
    beside = docs / "report.txt.~2~"
    assert f"restored version 2 (snapshot {s2[:8]}) as {beside}" in brought.stdout
    assert beside.read_bytes() == V2
    st = os.stat(beside)
    assert oct(st.st_mode & 0o7777) == oct(0o600) and st.st_mtime_ns == 1_600_000_100_000_000_002
    assert os.getxattr(beside, "user.colour") == b"red"
    assert report.read_bytes() == b"today's unsaved work", "the file itself is untouched"

    again = cli("versions", "--repo", repo, report, "--restore", "2", env=ENV)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"shadowvault: error: {beside} already exists: move it away, or replace the file with --overwrite"
    ]

    over = cli("versions", "--repo", repo, report, "--restore", "1", "--overwrite", "--json", env=ENV)
    assert over.returncode == 0, over.stderr
    (restored,) = _lines(over.stdout)  # it said "version", as a listing's lines do
    assert (restored["message_type"], restored["number"], restored["path"]) == ("restored", 1, str(report))
    assert report.read_bytes() == V1 and os.getxattr(report, "user.colour") == b"blue"
    old_link = cli("versions", "--repo", repo, link, "--restore", "1", env=ENV)
    assert old_link.returncode == 0, old_link.stderr
    assert os.readlink(docs / "current.~1~") == "report.txt"
    assert sorted(os.listdir(docs)) == ["current", "current.~1~", "report.txt", "report.txt.~2~"]


def test_a_failed_restore_leaves_nothing_under_the_final_name(ext4, tmp_path: Path, cli):
    repo_path = tmp_path / "repo"
    new_repo(repo_path).close()
    docs = ext4.mount / "docs"
    docs.mkdir()
    report = docs / "report.txt"
    report.write_bytes(os.urandom(3 << 20))
    done = cli("backup", "--repo", repo_path, "--provider", "none", docs, env=ENV)
    assert done.returncode == 0, done.stderr
    report.write_bytes(b"what is there now")
    with Repository.open(repo_path, PASSWORD) as repo:
        _, snap = repo.find_snapshot("latest")
        node = find_node(repo, snap.tree, str(report))
        assert node is not None
        location = repo.lookup(node.content[0])
        assert location is not None
    pack = next(repo_path.joinpath("data").rglob(pack_name(location.pack).rsplit("/", 1)[-1]))
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:  # damage the file's first blob
        f.seek(location.offset + 40)
        f.write(b"\xff" * 64)

    for args in (["--restore", "1"], ["--restore", "1", "--overwrite"]):
        failed = cli("versions", "--repo", repo_path, report, *args, env=ENV)
        assert failed.returncode == 3, failed.stderr
        last = failed.stderr.strip().splitlines()[-1]  # after the damage warnings, as restore shows them
        assert last.startswith(f"shadowvault: error: version 1 of {report} could not be restored: blob ")
        assert "Traceback" not in failed.stderr
        assert report.read_bytes() == b"what is there now"
        assert sorted(os.listdir(docs)) == ["report.txt"], "no partial file, no scratch directory"


def test_what_versions_refuses(ext4, tmp_path: Path, cli):
    repo = tmp_path / "repo"
    new_repo(repo).close()
    docs = ext4.mount / "docs"
    docs.mkdir()
    (docs / "a").write_bytes(b"a")
    assert cli("backup", "--repo", repo, "--provider", "none", docs, env=ENV).returncode == 0

    def one_line(*args: object, code: int, says: str) -> None:
        done = cli("versions", "--repo", repo, *args, env=ENV)
        assert done.returncode == code, done.stderr
        assert done.stderr.strip().splitlines() == [f"shadowvault: error: {says}"], done.stderr

    one_line(docs / "missing", code=1, says=f"{docs / 'missing'} is in no snapshot")
    one_line(docs / "a", "--restore", "9", code=2, says=f"there is no version 9: {docs / 'a'} has 1")
    one_line(docs / "a", "--overwrite", code=2, says="--overwrite goes with --restore N")
    one_line("", code=2, says="PATH is empty: give the path of a file as it was backed up")  # not the cwd
    done = cli("versions", "--repo", repo, docs, env=ENV)
    assert done.returncode == 2 and "is a directory" in done.stderr and "shadowvault restore" in done.stderr
