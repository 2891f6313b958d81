"""`backup`, `restore`, `ls`, `diff` as a user runs them: shadow sets, incremental runs, bad input."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import textwrap
import time

from shadowvault.jobs.backup import BackupRequest, run_backup
from shadowvault.repo.repository import Repository
from shadowvault.shadow import manifest as manifest_doc
from tests.archive.helpers import PASSWORD, assert_same_tree, new_repo, restore


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def summary_of(done) -> dict:
    lines = [line for line in json_lines(done.stdout) if line.get("message_type") == "summary"]
    assert len(lines) == 1, done.stdout + done.stderr
    return lines[0]


def test_backup_reads_the_shadow_not_later_writes(btrfs, cli, env, private_dirs):
    """A write made by the writer's thaw (after the commit) is not in the snapshot; the manifest is."""
    data = btrfs.mount / "data"
    data.mkdir()
    (data / "app.state").write_text("v1\n")
    db = sqlite3.connect(data / "app.db")
    db.execute("create table t (x)")
    db.executemany("insert into t values (?)", [(i,) for i in range(1000)])
    db.commit()
    db.close()
    (private_dirs / "config" / "writers.d" / "app.toml").write_text(
        textwrap.dedent(f"""
        name = "app"
        freeze = ["/bin/sh", "-c", "echo v2 > {data}/app.state"]
        thaw = ["/bin/sh", "-c", "echo v3 > {data}/app.state; echo late > {data}/late.txt"]
        paths = ["{data}"]
        """)
    )
    done = cli("backup", "--json", "--writer", "app", btrfs.mount, env=env)
    assert done.returncode == 0, done.stderr
    summary = summary_of(done)
    assert summary["freeze_window"] is not None
    assert summary["consistency"]["files"] == "crash"
    assert summary["consistency"]["app"] == "application"
    assert (data / "app.state").read_text() == "v3\n" and (data / "late.txt").exists()

    target = btrfs.mount.parent / "restored"
    done = cli("restore", "latest", "--target", target, "--verify", env=env)
    assert done.returncode == 0, done.stderr
    restored = target / str(data).lstrip("/")
    assert (restored / "app.state").read_text() == "v2\n"
    assert not (restored / "late.txt").exists()
    assert not (target / str(btrfs.mount).lstrip("/") / ".shadowvault").exists()
    check = sqlite3.connect(restored / "app.db")
    assert check.execute("pragma integrity_check").fetchone() == ("ok",)
    assert check.execute("select count(*) from t").fetchone() == (1000,)

    with Repository.open(env["SHADOWVAULT_REPOSITORY"], PASSWORD) as repo:
        _, snap = repo.find_snapshot("latest")
        stored = manifest_doc.decode(repo.load_blob(snap.manifest))
    assert snap.paths == [str(btrfs.mount)]
    assert [s.provider for s in stored.shadows] == ["btrfs"]
    assert "app" in [w.instance or w.name for w in stored.writers] or any(
        c.name == "app" for c in stored.components()
    )


def test_incremental_reads_nothing_unchanged(btrfs, tmp_path):
    """The second backup of an unchanged tree reads no file and saves no data blob."""
    src = btrfs.mount / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(20):
        (src / "sub" / f"f{i}").write_bytes(os.urandom(10_000 + i))
    (src / "big").write_bytes(os.urandom(3 << 20))
    repo = new_repo(tmp_path / "repo")
    first = run_backup(repo, BackupRequest(paths=[str(src)]))
    assert first.stats.files_new == 21 and first.stats.bytes_read == first.stats.bytes_total

    blobs_before = repo.stats.blobs_added
    second = run_backup(repo, BackupRequest(paths=[str(src)]))
    assert second.snapshot.parent == first.snapshot_id
    assert second.stats.files_unmodified == 21
    assert second.stats.bytes_read == 0 and second.stats.blobs_saved == 0
    # only the manifest and trees may be new: one per directory from / down to src and below it (their
    # times change when other processes touch /tmp, or when a listing updates an atime)
    assert repo.stats.blobs_added - blobs_before <= 1 + len(src.parts) + 1, "no data blob may be new"

    (src / "sub" / "f3").write_bytes(b"changed")
    third = run_backup(repo, BackupRequest(paths=[str(src)]))
    assert (third.stats.files_changed, third.stats.files_unmodified) == (1, 20)
    assert third.stats.bytes_read == len(b"changed")


def test_cli_round_trip_ls_diff(ext4, cli, env):
    src = ext4.mount / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "keep").write_text("same")
    (src / "dir" / "change").write_text("old")
    (src / "gone").write_text("bye")
    (src / "chmod").write_text("meta")
    (src / "skip.tmp").write_text("excluded")
    done = cli("backup", src, "--exclude", "*.tmp", "--tag", "first", "--provider", "none", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("snapshot ") and done.stdout.count("\n") == 1

    (src / "dir" / "change").write_text("new content")
    (src / "gone").unlink()
    (src / "new").write_text("hello")
    os.chmod(src / "chmod", 0o600)
    done = cli("backup", "--json", src, "--exclude", "*.tmp", "--provider", "none", env=env)
    assert done.returncode == 0, done.stderr
    second = summary_of(done)
    # chmod changes the ctime: that file is read again (as restic does)
    assert (second["files_unmodified"], second["files_changed"], second["files_new"]) == (1, 2, 1)

    listed = cli("ls", "latest", str(src), env=env)
    assert listed.returncode == 0
    names = listed.stdout.splitlines()
    assert f"{src}/new" in names and f"{src}/skip.tmp" not in names and f"{src}/gone" not in names
    long = cli("ls", "-l", "latest", f"{src}/chmod", env=env)
    assert long.stdout.startswith("-rw-------")

    snaps = json.loads(cli("snapshots", "--json", env=env).stdout)
    first_id, second_id = snaps[0]["id"], snaps[1]["id"]
    diff = cli("diff", "--json", first_id[:10], second_id, env=env)
    assert diff.returncode == 0, diff.stderr
    changes = {  # the directories above src (/tmp, ...) change under other programs: not compared
        c["path"]: c["change"]
        for c in json_lines(diff.stdout)
        if c["message_type"] == "change" and c["path"].startswith(str(src))
    }
    assert changes == {
        str(src): "metadata",  # its mtime changed with its entries
        f"{src}/dir/change": "modified",
        f"{src}/gone": "removed",
        f"{src}/new": "added",
        f"{src}/chmod": "metadata",
    }
    text = cli("diff", first_id, second_id, env=env).stdout
    assert f"+    {src}/new" in text.splitlines()

    target = ext4.mount / "restored"
    done = cli("restore", f"{second_id[:8]}:{src}", "--target", target, "--verify", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert summary_of(done)["verified"] == 4
    (src / "skip.tmp").unlink()
    assert_same_tree(src, target)


def test_bad_input_is_one_line(cli, env, tmp_path):
    target_file = tmp_path / "a-file"
    target_file.write_text("x")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    assert cli("backup", "--provider", "none", tmp_path / "src", env=env).returncode == 0
    cases = [
        (("backup", tmp_path / "does-not-exist"), "no such file"),
        (("restore", "deadbeef", "--target", tmp_path / "t"), "no snapshot"),
        (("restore", "latest", "--target", target_file), "not a directory"),
        (("restore", "latest:/no/such/path", "--target", tmp_path / "t2"), "no such path"),
        (("restore", "latest", "--target", tmp_path / "t3", "--overwrite", "sometimes"), "sometimes"),
        (("ls", "not-hex"), "not a snapshot id"),
        (("diff", "latest", "cafe"), "no snapshot"),
        (("backup", "--repo", target_file, tmp_path / "src"), "is a file"),
    ]
    for args, expected in cases:
        done = cli(*args, env=env)
        assert done.returncode != 0, args
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, (args, done.stderr)
        assert expected in done.stderr, (args, done.stderr)
    assert not (tmp_path / "t").exists()


def test_incremental_through_reflink_copies(xfs, tmp_path):
    """A reflink shadow has inodes and ctimes of its own: unchanged files are matched by the original's."""
    src = xfs.mount / "src"
    src.mkdir()
    for i in range(10):
        (src / f"f{i}").write_bytes(os.urandom(20_000 + i))
    time.sleep(1.2)  # older than the copy by more than the file-system clock margin
    repo = new_repo(tmp_path / "repo")
    first = run_backup(repo, BackupRequest(paths=[str(src)], provider="reflink"))
    assert first.stats.files_new == 10 and first.snapshot.consistency["files"] == "none"

    second = run_backup(repo, BackupRequest(paths=[str(src)], provider="reflink"))
    assert (second.stats.files_unmodified, second.stats.bytes_read) == (10, 0)

    (src / "f3").write_bytes(b"changed in place")
    third = run_backup(repo, BackupRequest(paths=[str(src)], provider="reflink"))
    assert (third.stats.files_changed, third.stats.files_unmodified) == (1, 9)
    target = xfs.mount / "restored"
    restore(repo, third.snapshot.tree, target, subpath=str(src))
    assert (target / "f3").read_bytes() == b"changed in place"
    assert (target / "f4").read_bytes() == (src / "f4").read_bytes()


def test_root_filesystem_is_never_shadowed_even_through_a_bind_mount(tmp_path, btrfs):
    """Paths on / (also via a bind mount of part of it) are read live; a loop volume is shadowed."""
    from shadowvault.jobs.shadowing import plan
    from tests.fixtures.loopfs import unmount_tree

    (tmp_path / "real").mkdir()
    (tmp_path / "bound").mkdir()
    subprocess.run(["mount", "--bind", tmp_path / "real", tmp_path / "bound"], check=True)
    try:
        planned = plan([os.fsencode(tmp_path / "bound"), os.fsencode(btrfs.mount)], "auto")
    finally:
        unmount_tree(tmp_path / "bound")
    assert planned.live == [os.fsencode(tmp_path / "bound")]
    assert list(planned.shadowed) == [str(btrfs.mount)]
    assert "root filesystem" in planned.warnings[0]
    assert plan([os.fsencode(btrfs.mount)], "none").live == [os.fsencode(btrfs.mount)]


def test_repository_inside_the_backed_up_tree_is_left_out(ext4):
    src = ext4.mount / "home"
    src.mkdir()
    (src / "doc.txt").write_text("keep")
    repo = new_repo(src / "backups" / "repo")
    result = run_backup(repo, BackupRequest(paths=[str(src)], provider="none"))
    from shadowvault.archive.listing import list_snapshot

    paths = [p for p, _ in list_snapshot(repo, result.snapshot.tree, str(src))]
    assert os.fsencode(src / "doc.txt") in paths
    assert os.fsencode(src / "backups") in paths  # the directory holding it stays, empty
    assert not any(p.startswith(os.fsencode(src / "backups" / "repo")) for p in paths)
