"""Issue 16, "What restic users reach for": `latest` narrowed by --path/--host/--tag, and find, dump,
cat, stats and tag, driven through the CLI as a user would (in process, one repository per module)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from shadowvault.archive.find import Patterns, find_entries
from shadowvault.cli.main import cli
from shadowvault.repo.format import BlobType
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Node, Tree
from tests.archive.helpers import FAST_KDF, PASSWORD

ODD_NAME = "odd\nname \x1b[31m.txt"  # a newline and an escape sequence: never raw on a terminal
MTIME_NS = 1_700_000_000_123_456_789


@dataclass
class World:
    """Three snapshots: A (first), A again with hello.txt changed, then B (the latest)."""

    env: dict[str, str]
    a: Path
    b: Path
    first: str
    second: str
    third: str
    sizes_at_first: int  # the sum of A's file sizes when the first snapshot was taken
    data: bytes  # a/sub/data.bin

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=self.env, catch_exceptions=False)

    def ok(self, *args: str) -> Result:
        done = self.run(*args)
        assert done.exit_code == 0, (args, done.stderr)
        return done


def _fill_a(a: Path) -> bytes:
    data = os.urandom(200_000) * 2  # dedupes against itself within the file and across snapshots
    (a / "sub").mkdir(parents=True)
    (a / "hello.txt").write_bytes(b"hello\n")
    (a / "sub" / "data.bin").write_bytes(data)
    (a / "run.sh").write_bytes(b"#!/bin/sh\n")
    (a / "run.sh").chmod(0o750)
    (a / ODD_NAME).write_bytes(b"odd")
    os.symlink("hello.txt", a / "link")
    (a / "private").mkdir(mode=0o700)
    (a / "private" / "key").write_bytes(b"k")
    for path in [a / "private" / "key", a / "run.sh", a / "sub" / "data.bin", a / "sub", a / "private"]:
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
    return data


def _file_sizes(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("inspect")
    for name in ("config/writers.d", "state"):
        (base / name).mkdir(parents=True)
    Repository.init(base / "repo", PASSWORD, kdf_params=FAST_KDF).close()
    env = {
        "SHADOWVAULT_REPOSITORY": str(base / "repo"),
        "SHADOWVAULT_PASSWORD": PASSWORD,
        "SHADOWVAULT_NO_DAEMON": "1",
        "SHADOWVAULT_CONFIG_DIR": str(base / "config"),
        "SHADOWVAULT_STATE_DIR": str(base / "state"),
    }
    a, b = base / "src-a", base / "src-b"
    data = _fill_a(a)
    b.mkdir()
    (b / "other.txt").write_bytes(b"other\n")
    ids = []
    world = World(env, a, b, "", "", "", _file_sizes(a), data)
    for step, source in enumerate((a, a, b)):
        if step == 1:
            (a / "hello.txt").write_bytes(b"hello again\n")
        done = world.ok("backup", "--provider", "none", "--json", str(source))
        ids.append([json.loads(line) for line in done.stdout.splitlines()][-1]["snapshot_id"])
    world.first, world.second, world.third = ids
    yield world


def _one_error_line(done: Result) -> str:
    assert done.exit_code != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shadowvault: error:"), done.stderr
    return lines[0]


# ------------------------------------------------------------------ latest narrowed by filters


def test_restore_latest_subpath_after_another_path_was_backed_up(world: World, tmp_path: Path) -> None:
    # the README's `restore latest:/srv/www`, after /srv/other was backed up later
    world.ok("restore", f"latest:{world.a}", "--path", str(world.a), "--target", str(tmp_path / "t1"))
    assert (tmp_path / "t1" / "hello.txt").read_bytes() == b"hello again\n"
    # without --path, "latest" with a subpath is the newest snapshot that holds it
    world.ok("restore", f"latest:{world.a}/sub", "--target", str(tmp_path / "t2"))
    assert (tmp_path / "t2" / "data.bin").read_bytes() == world.data
    # --path narrows `ls` and `diff` too; the latest without a filter is B's
    listed = world.ok("ls", "latest", "--path", str(world.a)).stdout.splitlines()
    assert f"{world.a}/hello.txt" in listed
    assert f"{world.b}/other.txt" in world.ok("ls", "latest").stdout.splitlines()
    changed = world.ok("diff", world.first, "latest", "--path", str(world.a)).stdout
    assert f"M    {world.a}/hello.txt" in changed.splitlines()


def test_a_snapshot_that_matches_no_filter_is_one_error_line(world: World, tmp_path: Path) -> None:
    line = _one_error_line(world.run("ls", world.first[:8], "--path", str(world.b)))
    assert world.first[:8] in line and "does not match" in line
    line = _one_error_line(
        world.run("restore", "latest", "--host", "no-such-host", "--target", str(tmp_path))
    )
    assert "no snapshot matches --host no-such-host" in line


# ------------------------------------------------------------------ dump


def test_dump_a_file_gives_its_exact_bytes(world: World) -> None:
    done = world.ok("dump", "latest", f"{world.a}/sub/data.bin", "--path", str(world.a))
    assert done.stdout_bytes == world.data
    line = _one_error_line(world.run("dump", world.second, f"{world.a}/no-such-file"))
    assert "no such path" in line


def test_dump_a_directory_as_tar_extracts_to_the_same_tree(world: World, tmp_path: Path) -> None:
    done = world.ok("dump", world.second, str(world.a))
    archive = tmp_path / "a.tar"
    archive.write_bytes(done.stdout_bytes)
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "-x", "-p", "-f", str(archive), "-C", str(out)], check=True)
    copy = out / str(world.a).lstrip("/")  # members are the snapshot's paths without the leading /
    for original in [world.a, *world.a.rglob("*")]:
        rel = original.relative_to(world.a)
        restored = copy / rel
        want, got = original.lstat(), restored.lstat()
        assert (got.st_mode, got.st_uid, got.st_gid) == (want.st_mode, want.st_uid, want.st_gid), rel
        if original.is_symlink():
            assert os.readlink(restored) == os.readlink(original)
            continue
        assert got.st_mtime_ns == want.st_mtime_ns, rel
        if original.is_file():
            assert restored.read_bytes() == original.read_bytes(), rel
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == sorted(
        p.relative_to(world.a) for p in world.a.rglob("*")
    )


# ------------------------------------------------------------------ find


def test_find_names_a_file_in_every_snapshot_that_holds_it(world: World) -> None:
    done = world.ok("find", "hello.txt", "--json")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    matches = [m for m in lines if m["message_type"] == "match"]
    assert {m["snapshot_id"] for m in matches} == {world.first, world.second}
    assert {m["path"] for m in matches} == {f"{world.a}/hello.txt"}
    assert sorted(m["size"] for m in matches) == [6, 12]
    assert lines[-1] == {"message_type": "summary", "matches": 2, "snapshots": 3}
    # a pattern with a slash matches the full path; names print escaped for people
    human = world.ok("find", f"{world.a}/*.txt", "--snapshot", world.first[:8]).stdout
    assert f"{world.a}/hello.txt" in human
    assert "\x1b" not in human and "odd\\nname \\x1b[31m.txt" in human
    # -l: ls -l's line, the snapshot before it
    long = world.ok("find", "-l", "run.sh", "--snapshot", world.first[:8]).stdout.splitlines()
    assert len(long) == 1 and long[0].startswith(world.first[:8]), long
    assert "-rwxr-x--- " in long[0] and long[0].endswith(f"{world.a}/run.sh"), long
    refused = world.run("find", "-l", "--blob", "abcd")
    assert refused.exit_code == 2 and "--long applies to patterns" in refused.stderr


# ------------------------------------------------------------------ cat


def test_cat_prints_the_decrypted_documents(world: World) -> None:
    config = json.loads(world.ok("cat", "config").stdout)
    assert config["version"] == 1 and "chunker" in config
    snapshot = json.loads(world.ok("cat", "snapshot", world.first[:8]).stdout)
    assert snapshot["paths"] == [str(world.a)]
    tree = json.loads(world.ok("cat", "tree", snapshot["tree"]).stdout)
    assert [n["name"] for n in tree["nodes"]] == [str(world.a).lstrip("/").split("/")[0]]
    for bad in (["cat", "blob", "../../etc/passwd"], ["cat", "index", "/etc"], ["cat", "nothing", "x"]):
        _one_error_line(world.run(*bad))
    # down the trees to hello.txt: its one data blob is the file's bytes
    for name in [*str(world.a).lstrip("/").split("/"), "hello.txt"]:
        node = next(n for n in tree["nodes"] if n["name"] == name)
        tree = json.loads(world.ok("cat", "tree", node["subtree"]).stdout) if node["type"] == "dir" else {}
    assert world.ok("cat", "blob", node["content"][0]).stdout_bytes == b"hello\n"
    repo = Path(world.env["SHADOWVAULT_REPOSITORY"])
    index_id = next((repo / "index").iterdir()).name
    packs = json.loads(world.ok("cat", "index", index_id[:10]).stdout)["packs"]
    header = json.loads(world.ok("cat", "pack", packs[0]["id"][:12]).stdout)  # a prefix names it too
    assert {b["id"] for b in header["blobs"]} == {b["id"] for b in packs[0]["blobs"]}
    key = json.loads(world.ok("cat", "key", next((repo / "keys").iterdir()).name[:8]).stdout)
    assert key["kdf"] == "scrypt"
    assert (
        json.loads(world.ok("cat", "snapshot", "latest", "--path", str(world.a)).stdout)["id"] == world.second
    )


# ------------------------------------------------------------------ stats


def test_stats_restore_size_and_raw_data(world: World) -> None:
    first = json.loads(world.ok("stats", world.first, "--json").stdout)
    assert first["total_size"] == world.sizes_at_first
    assert first["total_file_count"] == 6  # hello, data.bin, run.sh, the odd name, key, and the link
    raw = json.loads(world.ok("stats", "--mode", "raw-data", "--path", str(world.a), "--json").stdout)
    assert raw["snapshots_count"] == 2
    # both snapshots hold the same data.bin: it is stored once, and restored twice
    assert world.sizes_at_first * 2 < raw["restore_size"] < world.sizes_at_first * 2 + 100
    assert len(world.data) < raw["total_uncompressed_size"] < len(world.data) + 20_000
    assert raw["dedup_ratio"] > 1.9
    assert 0 < raw["total_size"] <= raw["total_uncompressed_size"] + 10_000  # sealed: a few bytes more each


# ------------------------------------------------------------------ tag (last: it changes an id)


def test_tag_add_remove_set_rewrites_the_snapshot(world: World) -> None:
    done = world.ok("tag", "--add", "keep", "--add", "web", "--path", str(world.b), "--json")
    changed = [json.loads(line) for line in done.stdout.splitlines()]
    assert changed[0]["old_id"] == world.third and changed[0]["tags"] == ["keep", "web"]
    listed = json.loads(world.ok("snapshots", "--tag", "keep", "--json").stdout)
    assert [s["paths"] for s in listed] == [[str(world.b)]]
    cat = json.loads(world.ok("cat", "snapshot", listed[0]["id"]).stdout)
    assert cat["original"] == world.third and cat["time"] == pytest.approx(listed[0]["time"])
    world.ok("tag", "--remove", "web", "latest", "--tag", "keep")
    assert json.loads(world.ok("snapshots", "--tag", "keep", "--json").stdout)[0]["tags"] == ["keep"]
    world.ok("tag", "--set", "final", "--tag", "keep")
    tags = [s["tags"] for s in json.loads(world.ok("snapshots", "--json").stdout)]
    assert tags == [[], [], ["final"]]
    _one_error_line(world.run("tag", "--set", "x", "--add", "y"))


def test_a_tag_with_a_line_break_is_refused_showing_it_as_typed(world: World) -> None:
    line = _one_error_line(world.run("tag", "--add", "a\nb", "latest"))
    assert line == "shadowvault: error: 'a\\nb' is not a tag (empty, or control characters)"


# ------------------------------------------------------------------ hostile repository content


def test_dump_and_find_keep_hostile_names_in_their_place(env: dict[str, str], tmp_path: Path) -> None:
    """A tree written by whoever holds the password: names that climb, hold '/', or repeat."""
    with Repository.open(env["SHADOWVAULT_REPOSITORY"], PASSWORD, write=True) as repo:
        data = repo.save_blob(BlobType.DATA, b"payload")

        def file(name: bytes) -> Node:
            return Node(name=name, type="file", mode=0o644, size=7, content=[data])

        inner = repo.save_tree(
            Tree(nodes=[file(b".."), file(b"a/b"), file(b"ok"), file(b"twice"), file(b"twice")])
        )
        top = repo.save_tree(Tree(nodes=[Node(name=b"h", type="dir", mode=0o755, subtree=inner)]))
        repo.save_snapshot(Snapshot(time=1.0, host="evil", paths=["/h"], tree=top))
    done = CliRunner().invoke(cli, ["dump", "latest", "/h"], env=env)
    assert done.exit_code == 3, done.stderr  # the stream is written, what was left out is said
    assert done.stderr.count("left out") == 4 and "Traceback" not in done.stderr
    archive = tmp_path / "h.tar"
    archive.write_bytes(done.stdout_bytes)
    listed = subprocess.run(["tar", "-t", "-f", str(archive)], capture_output=True, text=True, check=True)
    assert listed.stdout.splitlines() == ["h/", "h/ok"]
    found = CliRunner().invoke(cli, ["find", "*", "--json"], env=env)
    paths = [json.loads(line).get("path") for line in found.stdout.splitlines()]
    assert "/h/ok" in paths


def test_dump_of_content_that_lies_about_its_size_is_an_error(env: dict[str, str]) -> None:
    with Repository.open(env["SHADOWVAULT_REPOSITORY"], PASSWORD, write=True) as repo:
        data = repo.save_blob(BlobType.DATA, b"payload")
        files = [
            Node(name=b"long", type="file", size=100, content=[data]),
            Node(name=b"short", type="file", size=3),
        ]
        top = repo.save_tree(
            Tree(nodes=[Node(name=b"s", type="dir", subtree=repo.save_tree(Tree(nodes=files)))])
        )
        repo.save_snapshot(Snapshot(time=2.0, host="evil", paths=["/s"], tree=top))
    for path in ("/s", "/s/long", "/s/short"):
        line = _one_error_line(CliRunner().invoke(cli, ["dump", "latest", path], env=env))
        assert "its size says" in line


def test_backup_parent_latest_is_the_latest_of_the_same_paths(env: dict[str, str], tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for source in (a, b):
        source.mkdir()
        (source / "f").write_bytes(b"x")
    ids = []
    for source in (a, b, a):
        args = ["backup", "--provider", "none", "--json", str(source)]
        args += ["--parent", "latest"] if len(ids) == 2 else []
        done = CliRunner().invoke(cli, args, env=env)
        assert done.exit_code == 0, done.stderr
        ids.append(json.loads(done.stdout.splitlines()[-1])["snapshot_id"])
    third = json.loads(CliRunner().invoke(cli, ["cat", "snapshot", ids[2]], env=env).stdout)
    assert third["parent"] == ids[0]  # not b's snapshot, the newest of all


def _shared_levels(repo: Repository, levels: int) -> bytes:
    """A tree of `levels` levels, each with two entries for the level below (2^levels paths to
    the file at the bottom) and a hard link beside each pair: the same listing, reached many ways."""
    data = repo.save_blob(BlobType.DATA, b"bottom")
    tree = repo.save_tree(Tree(nodes=[Node(name=b"f", type="file", mode=0o644, size=6, content=[data])]))
    linked = Node(name=b"link", type="file", size=6, content=[data], nlink=2, device=1, inode=42)
    for _ in range(levels):
        below = [Node(name=name, type="dir", mode=0o755, subtree=tree) for name in (b"a", b"b")]
        tree = repo.save_tree(Tree(nodes=[*below, linked]))
    return tree


@pytest.mark.timeout(60)  # a walk of every path never ended
def test_stats_of_a_tree_shared_by_2_to_the_40_paths_ends_and_counts_every_path(
    env: dict[str, str],
) -> None:
    """A DAG of 40 levels, two entries each for the level below (2^40 paths), made `stats` run for
    ever: the restore size counts every path (restic's) from sums over each distinct tree, the
    other modes count content once; `find` walks paths, in memory bounded by the depth."""
    with Repository.open(env["SHADOWVAULT_REPOSITORY"], PASSWORD, write=True) as repo:
        root = _shared_levels(repo, 40)
        repo.save_snapshot(Snapshot(time=3.0, host="dag", paths=["/"], tree=root))
        repo.save_snapshot(Snapshot(time=4.0, host="dag", paths=["/"], tree=_shared_levels(repo, 3)))
    runner = CliRunner()
    figures = {
        mode: json.loads(runner.invoke(cli, ["stats", "--mode", mode, "--json"], env=env).stdout)
        for mode in ("restore-size", "files-by-contents", "blobs-per-file", "raw-data")
    }
    # 2^40 files at the bottom and one hard link (counted at every path, its bytes once) per
    # listing: 2^40 - 1 of them in the first snapshot; the small one alike with 3 levels
    files, links = (1 << 40) + (1 << 3), (1 << 40) - 1 + (1 << 3) - 1
    assert figures["restore-size"]["total_file_count"] == files + links
    assert figures["restore-size"]["total_size"] == 6 * files + 6 * 2
    assert figures["raw-data"]["restore_size"] == figures["restore-size"]["total_size"]
    assert figures["raw-data"]["total_blob_count"] == 1 + 41  # the data, 41 trees (the small ones among)
    assert figures["files-by-contents"]["total_file_count"] == 1  # one content
    assert figures["blobs-per-file"]["total_blob_count"] == 1
    with Repository.open(env["SHADOWVAULT_REPOSITORY"], PASSWORD) as repo:
        snapshots = [(sid, s) for sid, s in repo.list_snapshots() if s.tree == root]
        found = islice(find_entries(repo, snapshots, Patterns(["f"])), 2000)
        assert sum(1 for _ in found) == 2000  # as many as asked, none held: the walk goes on
