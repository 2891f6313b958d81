"""`restore --dry-run` (restic's): what a files restore would create, replace and keep, in each
--overwrite mode, with nothing written; then the real restore does exactly that."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from shadowvault.repo.format import BlobType
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Node, Tree
from tests.archive.helpers import PASSWORD
from tests.inprocess_cli import run


def _state(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry below `root`: its mode bits and, for a file, its bytes."""
    found: dict[str, tuple[int, bytes | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            found[str(path.relative_to(root))] = (st.st_mode, data)
    return found


@pytest.fixture
def snapshot(cli, env, tmp_path) -> Path:
    src = tmp_path / "src"
    (src / "dir" / "deep").mkdir(parents=True)
    (src / "new.txt").write_text("only in the snapshot\n")
    (src / "older-there.txt").write_text("snapshot copy, newer\n")
    (src / "newer-there.txt").write_text("snapshot copy, older\n")
    (src / "dir" / "deep" / "f").write_text("deep\n")
    (src / "file-where-target-has-dir").write_text("a file\n")
    (src / "dir-where-target-has-file").mkdir()
    (src / "dir-where-target-has-file" / "inside").write_text("below it\n")
    os.symlink("new.txt", src / "link")
    an_hour_ago = time.time() - 3600
    os.utime(src / "newer-there.txt", (an_hour_ago, an_hour_ago))
    done = cli("backup", "--provider", "none", str(src), env=env)
    assert done.returncode == 0, done.stderr
    return src


def _target(base: Path, src: Path) -> Path:
    """A target that already holds some of the snapshot's entries, older, newer and in the way."""
    target = base / "target"
    (target / "dir").mkdir(parents=True)
    (target / "older-there.txt").write_text("target copy, older\n")
    os.utime(target / "older-there.txt", (time.time() - 7200, time.time() - 7200))
    (target / "newer-there.txt").write_text("target copy, newer\n")
    (target / "file-where-target-has-dir").mkdir()
    (target / "dir-where-target-has-file").write_text("the target's file\n")
    return target


@pytest.mark.parametrize("mode", ["never", "if-newer", "always"])
def test_dry_run_says_what_the_restore_then_does(cli, env, snapshot, tmp_path, mode):
    target = _target(tmp_path / mode, snapshot)
    before = _state(target)
    ref = f"latest:{snapshot}"
    dry = cli("restore", ref, "--target", str(target), "--overwrite", mode, "--dry-run", "--json", env=env)
    assert _state(target) == before  # nothing written
    lines = [json.loads(line) for line in dry.stdout.splitlines()]
    actions = {line["path"][len(str(snapshot)) + 1 :]: line["action"] for line in lines[:-1]}
    # each line names where the restore writes the entry, next to its path in the snapshot
    assert all(line["target"] == str(target) + line["path"][len(str(snapshot)) :] for line in lines[:-1])
    summary = lines[-1]
    assert summary["message_type"] == "summary" and summary["dry_run"] is True

    assert (
        actions["new.txt"] == "create" and actions["link"] == "create" and actions["dir/deep/f"] == "create"
    )
    assert actions["older-there.txt"] == {"never": "keep", "if-newer": "replace", "always": "replace"}[mode]
    assert actions["newer-there.txt"] == {"never": "keep", "if-newer": "keep", "always": "replace"}[mode]
    in_the_way = actions["file-where-target-has-dir"]
    assert in_the_way == ("keep" if mode == "never" else "skip")  # a restore never removes a directory
    assert (
        actions["dir-where-target-has-file"]
        == {"never": "skip", "if-newer": "keep", "always": "replace"}[mode]
    )

    failing = sum(line.get("action") == "skip" for line in lines)
    assert summary["errors"] == failing
    assert dry.returncode == (3 if failing else 0), dry.stderr  # as the restore then exits
    done = cli("restore", ref, "--target", str(target), "--overwrite", mode, env=env)
    assert done.returncode == dry.returncode, done.stderr
    after = _state(target)
    for rel, action in actions.items():
        changed = after.get(rel) != before.get(rel)
        assert changed == (action in ("create", "replace")), (rel, action, before.get(rel), after.get(rel))


def test_dry_run_of_a_fresh_target_and_its_text(cli, env, snapshot, tmp_path):
    target = tmp_path / "fresh"
    dry = cli("restore", f"latest:{snapshot}", "--target", str(target), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert not target.exists()
    # the paths the restore would write, not the snapshot's (latest:SRC puts SRC's entries in target)
    assert f"create   file     {target}/dir/deep/f" in dry.stdout.splitlines()
    assert str(snapshot) not in dry.stdout.replace(str(target), "")

    whole = cli("restore", "latest", "--target", str(target), "--dry-run", env=env)
    assert whole.returncode == 0, whole.stderr
    assert f"create   file     {target}{snapshot}/dir/deep/f" in whole.stdout.splitlines()
    one = cli("restore", f"latest:{snapshot}/new.txt", "--target", str(target), "--dry-run", env=env)
    assert f"create   file     {target}/new.txt" in one.stdout.splitlines()
    assert "dry run, nothing changed" in dry.stdout and "0 to replace" in dry.stdout


def test_a_dry_run_that_foresees_errors_exits_as_the_restore_would(env, tmp_path):
    """A dry run that listed "skip (directory listing unreadable)" exited 0 while the restore then
    exited 3: a preview that foresees a partial restore exits 3 as well, its JSON counts the
    errors, and one that foresees only skipped files (unreadable at backup: a warning) exits 0."""
    with Repository.open(env["SHADOWVAULT_REPOSITORY"], PASSWORD, write=True) as repo:
        good = Node(name=b"good", type="file", size=4, content=[repo.save_blob(BlobType.DATA, b"good")])
        unread = Node(name=b"unread", type="file", error="EIO at backup")
        lost = Node(name=b"lost", type="dir", subtree=b"\x07" * 32)  # a listing no index holds
        damaged = repo.save_snapshot(
            Snapshot(time=time.time(), host="h", paths=["/"], tree=repo.save_tree(Tree(nodes=[good, lost])))
        )
        warned = repo.save_snapshot(
            Snapshot(time=time.time(), host="h", paths=["/"], tree=repo.save_tree(Tree(nodes=[good, unread])))
        )
    for snapshot_id, code in ((damaged, 3), (warned, 0)):
        target = tmp_path / snapshot_id
        dry = run(env, "restore", snapshot_id, "--target", target, "--dry-run", "--json")
        lines = [json.loads(line) for line in dry.stdout.splitlines()]
        assert lines[-1]["errors"] == (code == 3) and lines[-1]["entries_skip"] == 1
        assert dry.exit_code == code, dry.stderr
        text = run(env, "restore", snapshot_id, "--target", target, "--dry-run")
        assert text.exit_code == code and ("1 would fail" in text.stderr + text.stdout) == (code == 3)
        assert not target.exists()
        done = run(env, "restore", snapshot_id, "--target", target)
        assert done.exit_code == code, done.stderr
