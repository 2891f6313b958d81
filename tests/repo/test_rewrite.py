"""`rewrite`: a secret and a large file backed up by mistake, removed from every snapshot through the
CLI as a user would (in process), then freed by prune; dry runs, bad input, idempotent reruns, the
refusal beside a prune, and crafted trees (deep, unsafe names, lying sizes)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result

from shadowvault.archive.rewrite import RewriteRules, rewrite_snapshots
from shadowvault.repo.backend_local import LocalBackend
from shadowvault.repo.format import BlobType
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Node, Tree
from tests.archive.helpers import FAST_KDF, PASSWORD, assert_same_tree
from tests.inprocess_cli import Shadowvault, one_error_line

SECRET = b"AWS_SECRET_ACCESS_KEY=" + os.urandom(24).hex().encode() + b"\n"


@dataclass
class World:
    sv: Shadowvault
    repo: Path
    src: Path
    states: list[Path]  # the source as each backup saw it, without the secret and the large file
    ids: list[str]  # the backups, oldest first

    def ok(self, *args: object) -> Result:
        done = self.sv(*args)
        assert done.exit_code == 0, (args, done.stdout, done.stderr)
        return done

    def json_lines(self, *args: object) -> list[dict]:
        lines = [json.loads(line) for line in self.ok(*args, "--json").stdout.splitlines()]
        assert lines and all("message_type" in line for line in lines), lines
        return lines

    def snapshots(self) -> dict[str, dict]:
        return {s["id"]: s for s in json.loads(self.ok("snapshots", "--json").stdout)}

    def files(self) -> dict[str, bytes]:
        """Every file of the repository but the session files, with its bytes."""
        return {
            str(p.relative_to(self.repo)): p.read_bytes()
            for p in self.repo.rglob("*")
            if p.is_file() and "sessions" not in p.parts
        }


def _expected(src: Path, where: Path) -> Path:
    """A copy of the source as a rewritten snapshot restores it: no .env, no big/huge.iso."""
    subprocess.run(["cp", "-a", str(src), str(where)], check=True)  # owners too
    for removed in (where / ".env", where / "big" / "huge.iso"):
        parent = removed.parent
        st = parent.stat()
        removed.unlink()
        os.utime(parent, ns=(st.st_atime_ns, st.st_mtime_ns))
    return where


@pytest.fixture
def world(tmp_path: Path) -> World:
    repo, src = tmp_path / "repo", tmp_path / "src"
    Repository.init(repo, PASSWORD, kdf_params=FAST_KDF).close()
    for name in ("config/writers.d", "state", "cache"):
        (tmp_path / name).mkdir(parents=True)
    sv = Shadowvault(
        {
            "SHADOWVAULT_REPOSITORY": str(repo),
            "SHADOWVAULT_PASSWORD": PASSWORD,
            "SHADOWVAULT_NO_DAEMON": "1",
            "SHADOWVAULT_CONFIG_DIR": str(tmp_path / "config"),
            "SHADOWVAULT_STATE_DIR": str(tmp_path / "state"),
            "SHADOWVAULT_CACHE_DIR": str(tmp_path / "cache"),
        }
    )
    (src / "docs").mkdir(parents=True)
    (src / "big").mkdir()
    (src / "docs" / "notes.txt").write_bytes(b"notes\n")
    (src / "docs" / "data.bin").write_bytes(os.urandom(300_000))
    (src / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o750)
    os.chown(src / "run.sh", 1234, 5678)
    (src / "private").mkdir(mode=0o700)
    (src / "private" / "key").write_bytes(b"k")
    os.symlink("docs/notes.txt", src / "link")
    (src / ".env").write_bytes(SECRET)
    (src / ".env").chmod(0o600)
    (src / "big" / "huge.iso").write_bytes(os.urandom(3_000_000))
    w = World(sv, repo, src, [], [])
    for step in range(3):
        if step:
            (src / "docs" / "notes.txt").write_bytes(b"notes, take %d\n" % step)
        done = w.json_lines("backup", "--provider", "none", "--tag", "daily", src)
        w.ids.append(done[-1]["snapshot_id"])
        w.states.append(_expected(src, tmp_path / f"state{step}"))
    return w


def _tree_node(w: World, snapshot_id: str, *names: str) -> dict:
    """The node at `names` below the source in a snapshot, as `cat tree` shows it."""
    tree = json.loads(w.ok("cat", "snapshot", snapshot_id).stdout)["tree"]
    node: dict = {}
    for name in [*w.src.parts[1:], *names]:
        nodes = json.loads(w.ok("cat", "tree", tree).stdout)["nodes"]
        node = next(n for n in nodes if n["name"] == name)
        tree = node.get("subtree")
    return node


def test_rewrite_removes_them_from_every_snapshot_and_keeps_everything_else(world: World, tmp_path: Path):
    w = world
    before = w.snapshots()
    lines = w.json_lines("rewrite", "--exclude", ".env", "--exclude", f"{w.src}/big/huge.iso")
    rewritten = [line for line in lines if line["message_type"] == "rewritten"]
    assert [line["original"] for line in rewritten] == w.ids
    for line in rewritten:
        assert line["matched"] == 2 and line["removed_bytes"] == len(SECRET) + 3_000_000
        assert sorted(p["path"] for p in line["removed"]) == [f"{w.src}/.env", f"{w.src}/big/huge.iso"]
    assert lines[-1]["message_type"] == "summary" and lines[-1]["snapshots_rewritten"] == 3
    after = w.snapshots()
    assert set(w.ids) <= set(after) and len(after) == 6  # the originals are kept
    for line, state in zip(rewritten, w.states, strict=True):
        new, old = after[line["snapshot_id"]], before[line["original"]]
        assert new["original"] == line["original"] and new["tags"] == ["daily", "rewrite"]
        assert (new["time"], new["host"], new["paths"]) == (old["time"], old["host"], old["paths"])
        listed = w.ok("ls", line["snapshot_id"]).stdout.splitlines()
        assert f"{w.src}/.env" not in listed and f"{w.src}/big/huge.iso" not in listed
        assert f"{w.src}/big" in listed and f"{w.src}/docs/data.bin" in listed
        target = tmp_path / f"restored-{line['snapshot_id'][:8]}"
        w.ok("restore", f"{line['snapshot_id']}:{w.src}", "--target", target)
        assert_same_tree(state, target)  # contents, owners, modes, times, links
        document = json.loads(w.ok("cat", "snapshot", line["snapshot_id"]).stdout)
        [record] = document["summary"]["rewritten"]
        assert record["from"] == line["original"] and record["excludes"][0] == ".env"
    found = [json.loads(x) for x in w.ok("find", ".env", "--json").stdout.splitlines()]
    assert {x["snapshot_id"] for x in found if x["message_type"] == "match"} == set(w.ids)
    for line in rewritten:
        assert w.sv("find", ".env", "--snapshot", line["snapshot_id"]).stdout.count(".env") == 0
    # a second run finds the copies it made: nothing new is written
    again = w.json_lines("rewrite", "--exclude", ".env", "--exclude", f"{w.src}/big/huge.iso")
    assert all(x["already_rewritten"] for x in again if x["message_type"] == "rewritten")
    assert again[-1]["snapshots_rewritten"] == 0 and len(w.snapshots()) == 6


def test_forget_of_the_originals_then_prune_frees_the_secret(world: World):
    w = world
    secret_blob = _tree_node(w, w.ids[0], ".env")["content"][0]
    assert w.ok("cat", "blob", secret_blob).stdout_bytes == SECRET
    size_before = json.loads(w.ok("stats", "--mode", "raw-data", "--json").stdout)["total_size"]
    w.ok("rewrite", "--iexclude", ".ENV", "--exclude", "huge.iso")
    w.ok("forget", *w.ids)
    w.ok("prune")
    assert one_error_line(w.sv("cat", "blob", secret_blob))
    w.ok("check", "--read-data")
    assert not any(SECRET in data for data in w.files().values())  # (encrypted anyway)
    size_after = json.loads(w.ok("stats", "--mode", "raw-data", "--json").stdout)["total_size"]
    assert size_after < size_before - 2_900_000
    assert sum(p.stat().st_size for p in (w.repo / "data").rglob("*") if p.is_file()) < 1_000_000
    assert len(w.snapshots()) == 3


def test_forget_option_removes_the_originals_once_the_copies_are_saved(world: World, tmp_path: Path):
    w = world
    big_blobs = _tree_node(w, w.ids[0], "big", "huge.iso")["content"]
    out = w.ok("rewrite", "--exclude", ".env", "--exclude", "/**/big/huge.iso", "--forget").stdout
    assert out.count("(original forgotten)") == 3 and "forgot 3 originals" in out
    after = w.snapshots()
    assert len(after) == 3 and not set(w.ids) & set(after)
    assert sorted(s["original"] for s in after.values()) == sorted(w.ids)
    w.ok("prune")
    w.ok("check", "--read-data")
    for blob in big_blobs:
        assert w.sv("cat", "blob", blob).exit_code != 0
    latest = tmp_path / "latest"
    w.ok("restore", f"latest:{w.src}", "--target", latest)
    assert_same_tree(w.states[-1], latest)


def test_copy_brings_the_rewritten_snapshots_where_their_originals_were_copied(world: World, tmp_path: Path):
    """A copy matches snapshots by `original` and content: the destination that holds the originals
    gets the rewritten ones too (the secret's removal must reach the copies), and a second copy
    copies nothing."""
    w = world
    dest = tmp_path / "dest"
    w.ok("init", "--repo", dest)
    from_here = ["--repo", dest, "--from-repo", w.repo, "--from-password-command", f"echo {PASSWORD}"]
    w.ok("copy", *from_here)
    w.ok("rewrite", "--exclude", ".env", "--exclude", "huge.iso", "--forget")
    copied = json.loads(w.ok("copy", *from_here, "--json").stdout.splitlines()[-1])["copied"]
    assert len(copied) == 3, copied
    in_dest = {s["id"]: s for s in json.loads(w.ok("snapshots", "--repo", dest, "--json").stdout)}
    rewritten = [s for s in in_dest.values() if "rewrite" in s["tags"]]
    assert len(in_dest) == 6 and len(rewritten) == 3
    for snapshot in rewritten:
        listed = w.ok("ls", "--repo", dest, snapshot["id"]).stdout.splitlines()
        assert f"{w.src}/.env" not in listed and f"{w.src}/docs/notes.txt" in listed
    again = json.loads(w.ok("copy", *from_here, "--json").stdout.splitlines()[-1])
    assert again["copied"] == [], again


def test_dry_run_writes_nothing_and_says_what_it_would_remove(world: World):
    w = world
    files = w.files()
    out = w.ok("rewrite", "--exclude", ".env", "--exclude", "huge.iso", "--dry-run", "-v").stdout
    assert out.count("would remove 2 entries, 2.9 MiB") == 3
    assert f"  {w.src}/.env" in out.splitlines() and "dry run: nothing was written" in out
    lines = w.json_lines("rewrite", "--exclude", ".env", "-n")
    done = [x for x in lines if x["message_type"] == "rewritten"]
    assert [x["snapshot_id"] for x in done] == [None] * 3 and all(x["dry_run"] for x in done)
    assert done[0]["removed"] == [{"path": f"{w.src}/.env"}] and done[0]["removed_bytes"] == len(SECRET)
    assert w.files() == files and not list((w.repo / "sessions").iterdir())


def test_only_snapshots_the_filters_pass_and_untouched_ones_stay(world: World, tmp_path: Path):
    w = world
    other = tmp_path / "other"
    other.mkdir()
    (other / "plain.txt").write_bytes(b"nothing to hide\n")
    plain = w.json_lines("backup", "--provider", "none", "--tag", "weekly", other)[-1]["snapshot_id"]
    lines = w.json_lines("rewrite", "--exclude", ".env", "--tag", "weekly")
    assert lines == [lines[-1]] and lines[-1]["snapshots_checked"] == 1  # nothing matched: no copy
    assert len(w.snapshots()) == 4
    patterns = tmp_path / "excludes"
    patterns.write_text("# what must go\n\n  .env  \n")
    lines = w.json_lines("rewrite", "--exclude-file", patterns, w.ids[1], plain)
    assert [x["original"] for x in lines if x["message_type"] == "rewritten"] == [w.ids[1]]
    assert set(w.snapshots()) >= {plain, *w.ids} and len(w.snapshots()) == 5


def test_bad_input_is_one_line(world: World, tmp_path: Path):
    w = world
    files = w.files()
    assert "no snapshot" in one_error_line(done := w.sv("rewrite", "--exclude", "x", "deadbeef"))
    assert done.exit_code == w.sv("restore", "deadbeef", "--target", tmp_path / "t").exit_code == 1
    assert "invalid pattern" in one_error_line(done := w.sv("rewrite", "--exclude", "[z-a]"))
    assert done.exit_code == 2
    assert "nothing to remove" in one_error_line(done := w.sv("rewrite"))
    assert done.exit_code == 2
    assert "empty pattern" in one_error_line(w.sv("rewrite", "--exclude", ""))
    assert one_error_line(done := w.sv("rewrite", "--exclude-file", tmp_path / "missing")).count("\n") == 0
    assert done.exit_code == 2
    done = w.sv("rewrite", "--exclude", "[z-a]", "--json")
    assert json.loads(done.stderr) == {"message_type": "exit_error", "code": 2, "message": done_message(done)}
    assert w.files() == files


def done_message(done: Result) -> str:
    return json.loads(done.stderr)["message"]


def test_refuses_beside_a_prune_and_prune_beside_it(world: World):
    w = world
    with Repository.open(w.repo, PASSWORD, write=True, kind="prune"):
        assert "a prune is running" in one_error_line(w.sv("rewrite", "--exclude", ".env"))
    assert len(w.snapshots()) == 3
    with Repository.open(w.repo, PASSWORD, write=True, kind="rewrite"):
        assert "a rewrite is running" in one_error_line(w.sv("prune"))
    w.ok("rewrite", "--exclude", ".env", "--dry-run")  # a dry run opens no session


def _crafted(repo: Repository, depth: int) -> tuple[str, bytes]:
    """A snapshot of /deep/d/d/.../d holding a secret at the bottom, beside an unsafe name and a
    file claiming a negative size; returns its id and the secret's blob id."""
    secret = repo.save_blob(BlobType.DATA, b"crafted secret")
    tree = repo.save_tree(
        Tree(
            nodes=[
                Node(name=b"..", type="file", size=1),
                Node(name=b"liar", type="file", size=-5),
                Node(name=b"secret", type="file", size=14, content=[secret]),
            ]
        )
    )
    for _ in range(depth):
        tree = repo.save_tree(Tree(nodes=[Node(name=b"d", type="dir", mode=0o755, subtree=tree)]))
    root = repo.save_tree(Tree(nodes=[Node(name=b"deep", type="dir", mode=0o755, subtree=tree)]))
    snapshot_id = repo.save_snapshot(Snapshot(time=1.0, host="h", paths=["/deep"], tree=root))
    return snapshot_id, secret


def test_crafted_trees_deep_unsafe_names_lying_sizes(world: World):
    w = world
    with Repository.open(w.repo, PASSWORD, write=True) as repo:
        crafted, _secret = _crafted(repo, depth=3000)
    lines = w.json_lines(
        "rewrite", "--exclude", "secret", "--exclude", "liar", "--exclude", r"\x2e\x2e", crafted
    )
    [done] = [x for x in lines if x["message_type"] == "rewritten"]
    assert done["matched"] == 3 and done["removed_bytes"] == 15  # 14 + 1 (".."), "liar" counts 0
    with Repository.open(w.repo, PASSWORD) as repo:
        tree = repo.load_snapshot(done["snapshot_id"]).tree
        for _ in range(3001):
            [node] = repo.load_tree(tree).nodes
            assert node.subtree is not None
            tree = node.subtree
        assert repo.load_tree(tree).nodes == []


class _Crash(Exception):
    """The process "dies" here: nothing after this point runs."""


class _CrashingBackend(LocalBackend):
    """The local backend, dying at the first save (or removal) of a snapshot file."""

    def __init__(self, root: Path, on: str) -> None:
        super().__init__(root)
        self.on = on

    def save(self, name: str, data: bytes) -> None:
        if self.on == "save" and name.startswith("snapshots/"):
            raise _Crash(name)
        super().save(name, data)

    def remove(self, name: str) -> None:
        if self.on == "remove" and name.startswith("snapshots/"):
            raise _Crash(name)
        super().remove(name)


@pytest.mark.parametrize("on", ["save", "remove"])
def test_a_crash_leaves_the_originals_and_a_rerun_finishes(world: World, on: str):
    """Dying before the first new snapshot leaves only unreferenced trees; dying before the first
    original is removed leaves originals and copies side by side. Either way check passes, and the
    rerun writes no second copy and removes the originals."""
    w = world
    rules = RewriteRules(excludes=(".env", "huge.iso"))
    crashing = _CrashingBackend(w.repo, on)
    with pytest.raises(_Crash), Repository.open(crashing, PASSWORD, write=True, kind="rewrite") as repo:
        rewrite_snapshots(repo, repo.list_snapshots(), rules, forget=True)
    assert set(w.ids) <= set(w.snapshots()) and len(w.snapshots()) == (3 if on == "save" else 6)
    w.ok("check")
    lines = w.json_lines("rewrite", "--exclude", ".env", "--exclude", "huge.iso", "--forget")
    assert lines[-1]["already_rewritten"] == (0 if on == "save" else 3)
    assert lines[-1]["originals_forgotten"] == 3
    after = w.snapshots()
    assert len(after) == 3 and sorted(s["original"] for s in after.values()) == sorted(w.ids)
    w.ok("prune")
    w.ok("check", "--read-data")


def test_latest_and_the_next_parent_are_the_rewritten_copy_even_of_a_retagged_snapshot(world: World):
    """A retagged snapshot already has an `original`; its rewritten copy has the same one and the
    same time: the copy is still the newer of the two."""
    w = world
    w.ok("tag", w.ids[-1], "--add", "kept")
    w.ok("rewrite", "--exclude", ".env")
    [latest] = json.loads(w.ok("snapshots", "latest", "--json").stdout)
    assert "rewrite" in latest["tags"] and "kept" in latest["tags"], latest
    done = w.json_lines("backup", "--provider", "none", "--tag", "daily", w.src)
    assert json.loads(w.ok("cat", "snapshot", done[-1]["snapshot_id"]).stdout)["parent"] == latest["id"]
