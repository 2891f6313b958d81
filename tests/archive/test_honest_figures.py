"""The figures the commands print add up (issue 16, "Wrong figures"): hard links on a first backup,
prune --dry-run, check after prune, diff above the backed-up paths, a full disk, an empty password."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

from shadowvault.repo.format import BlobType
from shadowvault.repo.pack import pack_name
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from shadowvault.repo.tree import Node, Tree
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.fixtures.loopfs import loop_filesystem
from tests.inprocess_cli import run as sv


def summary_of(done: subprocess.CompletedProcess[str]) -> dict:
    (summary,) = [m for m in map(json.loads, done.stdout.splitlines()) if m["message_type"] == "summary"]
    return summary


def snapshot_ids(cli, env) -> list[str]:
    return [s["id"] for s in json.loads(cli("snapshots", "--json", env=env).stdout)]


def test_a_hard_links_second_name_is_new_on_a_first_backup(cli, env, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "first").write_text("shared\n")
    os.link(src / "first", src / "second")
    (src / "alone").write_text("alone\n")
    done = cli("backup", "--json", "--provider", "none", str(src), env=env)
    assert done.returncode == 0, done.stderr
    summary = summary_of(done)
    assert (summary["files_new"], summary["files_changed"], summary["files_unmodified"]) == (3, 0, 0)
    done = cli("backup", "--json", "--provider", "none", str(src), env=env)
    summary = summary_of(done)
    assert (summary["files_new"], summary["files_changed"], summary["files_unmodified"]) == (0, 0, 3)


def test_prune_dry_run_says_would_and_check_after_prune_is_quiet(cli, env, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02}").write_bytes(os.urandom(3000))
    assert cli("backup", "--provider", "none", str(src), env=env).returncode == 0
    for i in range(20):  # half of the first backup's data is used by no later snapshot
        (src / f"f{i:02}").unlink()
    assert cli("backup", "--provider", "none", str(src), env=env).returncode == 0
    first = snapshot_ids(cli, env)[0]
    assert cli("forget", first, env=env).returncode == 0

    dry = cli("prune", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would repack" in dry.stdout and "repacked" not in dry.stdout, dry.stdout
    pruned = cli("prune", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert "repacked" in pruned.stdout

    for i in range(20, 21):  # one unused blob in a pack prune keeps (under 10 % unused)
        (src / f"f{i:02}").unlink()
    assert cli("backup", "--provider", "none", str(src), env=env).returncode == 0
    older = snapshot_ids(cli, env)[0]
    assert cli("forget", older, "--prune", env=env).returncode == 0
    checked = cli("check", env=env)
    assert checked.returncode == 0, checked.stderr
    assert "not referenced" not in checked.stdout + checked.stderr, checked.stderr
    report = json.loads(cli("check", "--json", env=env).stdout)
    assert report["warnings"] == [] and report["unreferenced_blobs"] > 0  # counted, not a warning


def test_diff_does_not_list_the_directories_above_the_backed_up_paths(cli, env, tmp_path):
    src = tmp_path / "deep" / "er" / "src"
    src.mkdir(parents=True)
    (src / "file").write_text("one\n")
    assert cli("backup", "--provider", "none", str(src), env=env).returncode == 0
    (tmp_path / "deep" / "other").write_text("changes the mtime of deep/, which is not backed up\n")
    (src / "file").write_text("two\n")
    assert cli("backup", "--provider", "none", str(src), env=env).returncode == 0
    first, second = snapshot_ids(cli, env)
    diff = cli("diff", "--json", first, second, env=env)
    assert diff.returncode == 0, diff.stderr
    changes = [m for m in map(json.loads, diff.stdout.splitlines()) if m["message_type"] == "change"]
    assert [(c["path"], c["change"]) for c in changes] == [(f"{src}/file", "modified")]


def test_a_full_repository_disk_says_that_prune_frees_space(cli, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(80 << 20))
    with loop_filesystem("ext4", size=64 << 20) as fs:
        repo = fs.mount / "repo"
        Repository.init(repo, PASSWORD, kdf_params=FAST_KDF).close()
        env = {"SHADOWVAULT_REPOSITORY": str(repo), "SHADOWVAULT_PASSWORD": PASSWORD}
        done = cli("backup", "--provider", "none", str(src), env=env)
        assert done.returncode != 0
        (line,) = done.stderr.splitlines()
        assert "repository storage is full" in line and "shadowvault prune" in line and "forget" in line


PROMPT = b"repository password:"


def test_an_empty_password_at_the_prompt_is_refused_not_asked_again(tmp_path, env):
    main, child = pty.openpty()
    environment = {k: v for k, v in {**os.environ, **env}.items() if k != "SHADOWVAULT_PASSWORD"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shadowvault.cli.launch", "snapshots"],
        stdin=child,
        stdout=subprocess.PIPE,
        stderr=child,
        env=environment,
    )
    os.close(child)
    seen, answered = b"", 0
    try:
        while proc.poll() is None and answered < 3:  # three prompts answered at most: it must be done by then
            ready, _, _ = select.select([main], [], [], 60)
            assert ready, seen
            try:
                seen += os.read(main, 1024)
            except OSError:  # the process closed the terminal
                break
            if seen.count(PROMPT) > answered:
                os.write(main, b"\n")
                answered += 1
        assert proc.wait(timeout=60) == 2, seen  # a usage error
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    assert seen.count(PROMPT) == 1 and b"empty password is not allowed" in seen, seen


def test_progress_counts_done_against_the_totals(cli, env, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sizes = [1000 * (i + 1) for i in range(30)]
    for i, size in enumerate(sizes):
        (src / f"f{i:02}").write_bytes(os.urandom(size))
    os.link(src / "f00", src / "link-to-f00")
    total_bytes = sum(sizes) + sizes[0]
    for run in ("first", "second"):
        done = cli("backup", "--json", "--provider", "none", str(src), env=env)
        assert done.returncode == 0, done.stderr
        statuses = [m for m in map(json.loads, done.stdout.splitlines()) if m["message_type"] == "status"]
        last = statuses[-1]  # the figures the backup ended with
        assert (last["files_done"], last["total_files"]) == (31, 31), (run, last)
        assert (last["bytes_done"], last["total_bytes"]) == (total_bytes, total_bytes), (run, last)
        assert last["percent_done"] == 1.0 and last["seconds_remaining"] == 0 and last["scan_finished"]
        assert last["bytes_per_second"] > 0
        for status in statuses:  # never more done than the total it was shown against
            assert (
                status["files_done"] <= status["total_files"]
                and status["bytes_done"] <= status["total_bytes"]
            )


def test_the_scanner_counts_what_the_backup_will_read(tmp_path):
    from shadowvault.archive.scan import Scanner
    from shadowvault.archive.walk_stats import Source, WalkStats

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a").write_bytes(b"a" * 100)
    (src / "b").write_bytes(b"b" * 50)
    (src / "skip").mkdir()
    (src / "skip" / "c").write_bytes(b"c" * 7)
    stats = WalkStats()
    raw = os.fsencode(src)
    with Scanner([Source(raw, raw)], stats, skipped=lambda p: p == raw + b"/skip"):
        while not stats.scan_finished:
            os.sched_yield()
    assert (stats.scan_files, stats.scan_bytes) == (2, 150)


def test_progress_says_the_shadow_set_is_being_taken_while_writers_freeze(cli, env, btrfs, private_dirs):
    """A writer that takes its time to freeze: the status says so instead of '0.0% 0/0 files', and
    the rate counts the reading only (the freeze window read nothing)."""
    data = btrfs.mount / "data"
    data.mkdir()
    (data / "f").write_bytes(os.urandom(200_000))
    (private_dirs / "config" / "writers.d" / "slow.toml").write_text(
        f'name = "slow"\nfreeze = ["/bin/sleep", "2.5"]\nthaw = ["/bin/true"]\npaths = ["{data}"]\n'
    )
    done = cli("backup", "--json", "--writer", "slow", str(data), env=env)
    assert done.returncode == 0, done.stderr
    statuses = [m for m in map(json.loads, done.stdout.splitlines()) if m["message_type"] == "status"]
    phases = [s["phase"] for s in statuses]
    assert phases[0] == "shadow set" and phases[-1] == "reading", phases
    assert phases == sorted(phases, key=["shadow set", "reading"].index)  # once past, never back
    assert all(s["bytes_per_second"] == 0 for s in statuses if s["phase"] == "shadow set")


def test_a_file_that_fails_to_restore_is_not_counted_in_the_bytes_restored(env, tmp_path):
    """The bytes of a file that failed (its first blob written, its second damaged) counted in the
    summary's size: only what was restored counts, in the text and in --json."""
    good, lost = os.urandom(30_000), os.urandom(20_000)
    whole = os.urandom(7_000)
    with Repository.open(env["SHADOWVAULT_REPOSITORY"], PASSWORD, write=True) as repo:
        first = repo.save_blob(BlobType.DATA, good)
        second = repo.save_blob(BlobType.DATA, lost)  # after the first, in the same pack
        repo.flush()
        damaged = repo.lookup(second)
        nodes = [
            Node(name=b"broken", type="file", size=len(good) + len(lost), content=[first, second]),
            Node(name=b"whole", type="file", size=len(whole), content=[repo.save_blob(BlobType.DATA, whole)]),
        ]
        root = repo.save_tree(Tree(nodes=nodes))
        snapshot_id = repo.save_snapshot(Snapshot(time=time.time(), host="h", paths=["/"], tree=root))
    pack = os.path.join(env["SHADOWVAULT_REPOSITORY"], pack_name(damaged.pack))
    os.chmod(pack, 0o600)
    with open(pack, "r+b") as f:
        f.seek(damaged.offset + damaged.length // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))
    for verify in ((), ("--verify",)):
        target = tmp_path / f"target{len(verify)}"
        done = sv(env, "restore", snapshot_id, "--target", target, "--json", *verify)
        assert done.exit_code == 3, done.stderr
        summary = [json.loads(line) for line in done.stdout.splitlines()][-1]
        assert (summary["files"], summary["errors"], summary["bytes_written"]) == (1, 1, len(whole))
        assert sorted(os.listdir(target)) == ["whole"]
    text = sv(env, "restore", snapshot_id, "--target", tmp_path / "text")
    assert "1 file, 0 dirs, 0 others, 6.8 KiB in" in text.stderr + text.stdout
