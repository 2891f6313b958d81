"""What a backup records when the tree is awkward: paths past PATH_MAX, entries it may not read, files
that change while they are read. Whatever could not be read is in the snapshot as an error entry;
a file's recorded size is the number of bytes stored."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shadowvault.archive.listing import list_snapshot
from shadowvault.archive.walker import Archiver, Source, WalkStats
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from tests.archive.helpers import PASSWORD

DEPTH, NAME_LEN = 30, 200  # 30 * 201 bytes: a path far past PATH_MAX (4096)
DEEP_CONTENT = b"at the bottom\n" * 1000


def json_lines(text: str) -> list[dict]:
    """The JSON messages of an output (stderr also has log lines)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def raw_path(entry: dict) -> bytes:
    return base64.b64decode(entry["path_bytes"]) if "path_bytes" in entry else entry["path"].encode()


def level_name(i: int) -> bytes:
    return (b"%02d-" % i) + b"d" * (NAME_LEN - 3)


def make_deep(root: bytes) -> bytes:
    """DEPTH nested directories below `root` holding a file and a symlink; their relative path."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(DEPTH):
            os.mkdir(level_name(i), 0o750, dir_fd=fd)
            sub = os.open(level_name(i), os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        out = os.open(b"deep.txt", os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=fd)
        os.write(out, DEEP_CONTENT)
        os.close(out)
        os.setxattr(b"/proc/self/fd/%d/deep.txt" % fd, "user.depth", b"30")
        os.symlink(b"deep.txt", b"link", dir_fd=fd)
    finally:
        os.close(fd)
    return b"/".join(level_name(i) for i in range(DEPTH))


def read_deep(root: bytes, relative: bytes, name: bytes) -> tuple[bytes, os.stat_result]:
    """Content and lstat of `root/relative/name`, reached one directory at a time."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in relative.split(b"/"):
            sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = sub
        st = os.lstat(name, dir_fd=fd)
        if os.path.islink(b"/proc/self/fd/%d/%s" % (fd, name)):
            return os.readlink(name, dir_fd=fd), st
        handle = os.open(name, os.O_RDONLY, dir_fd=fd)
        with open(handle, "rb") as f:
            return f.read(), st
    finally:
        os.close(fd)


def test_a_tree_deeper_than_path_max_is_backed_up_whole(cli, env, tmp_path):
    src = os.fsencode(tmp_path / "src")
    os.mkdir(src)
    relative = make_deep(src)
    assert len(src) + len(relative) > 4096

    done = cli("backup", "--json", "--provider", "none", os.fsdecode(src), env=env)
    assert done.returncode == 0, done.stderr
    summary = next(m for m in json_lines(done.stdout) if m["message_type"] == "summary")
    assert summary["errors"] == 0 and summary["dirs"] == DEPTH + 1

    listed = cli("ls", "--json", "latest", os.fsdecode(src), env=env)
    assert listed.returncode == 0, listed.stderr
    nodes = {raw_path(m): m for m in json_lines(listed.stdout) if m["message_type"] == "node"}
    deep_file = nodes[src + b"/" + relative + b"/deep.txt"]
    assert deep_file["size"] == len(DEEP_CONTENT) and "error" not in deep_file
    assert deep_file["xattrs"] == ["user.depth"]
    assert nodes[src + b"/" + relative + b"/link"]["link_target"] == "deep.txt"

    target = os.fsencode(tmp_path / "restored")
    done = cli("restore", "latest", "--target", os.fsdecode(target), env=env)
    assert done.returncode == 0, done.stderr
    restored_root = target + src
    content, st = read_deep(restored_root, relative, b"deep.txt")
    assert content == DEEP_CONTENT and st.st_mode & 0o777 == 0o640
    assert read_deep(restored_root, relative, b"link")[0] == b"deep.txt"


def without_dac_override(cli_args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI run as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH: permission bits apply to it."""
    drop = "-dac_override,-dac_read_search"
    return subprocess.run(
        [
            "setpriv",
            f"--bounding-set={drop}",
            f"--inh-caps={drop}",
            "--",
            sys.executable,
            "-m",
            "shadowvault.cli.launch",
            *cli_args,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


def test_what_cannot_be_read_is_an_error_entry_of_the_snapshot(cli, env, tmp_path):
    src = tmp_path / "src"
    (src / "unlistable").mkdir(parents=True)
    (src / "unlistable" / "inside").write_text("never seen")
    (src / "unsearchable").mkdir()
    (src / "unsearchable" / "named-only").write_text("listed, not readable")
    (src / "sealed").write_text("no permission")
    (src / "fine").write_text("fine\n")
    os.chmod(src / "unlistable", 0o300)
    os.chmod(src / "unsearchable", 0o600)
    os.chmod(src / "sealed", 0o000)

    done = without_dac_override(["backup", "--json", "--provider", "none", str(src)], env)
    assert done.returncode == 3, done.stderr
    reported = {m["path"] for m in json_lines(done.stderr) if m.get("message_type") == "error"}
    assert reported == {f"{src}/unlistable", f"{src}/unsearchable/named-only", f"{src}/sealed"}

    listed = cli("ls", "--json", "latest", str(src), env=env)
    nodes = {m["path"]: m for m in json_lines(listed.stdout) if m["message_type"] == "node"}
    assert "Permission denied" in nodes[f"{src}/unlistable"]["error"]
    assert nodes[f"{src}/unlistable"]["type"] == "dir"
    assert "Permission denied" in nodes[f"{src}/unsearchable/named-only"]["error"]
    assert nodes[f"{src}/unsearchable/named-only"]["type"] == "file"
    assert "Permission denied" in nodes[f"{src}/sealed"]["error"]
    assert "error" not in nodes[f"{src}/fine"] and "error" not in nodes[f"{src}/unsearchable"]

    target = tmp_path / "restored"
    done = cli("restore", "--json", "latest", "--target", str(target), env=env)
    not_restored = {
        m["path"] for m in json_lines(done.stderr) if m.get("message_type") in ("warning", "error")
    }
    assert {f"{src}/unsearchable/named-only", f"{src}/sealed", f"{src}/unlistable"} <= not_restored
    assert list((target / str(src).lstrip("/") / "unlistable").iterdir()) == []  # restored empty, said so
    assert (target / str(src).lstrip("/") / "fine").read_text() == "fine\n"
    assert not (target / str(src).lstrip("/") / "sealed").exists()


def _archive_with(repo: Repository, src: Path, chunker) -> tuple[bytes, WalkStats]:
    stats = WalkStats()
    raw = os.fsencode(src)
    root = Archiver(repo, chunker=chunker, stats=stats).archive([Source(raw, raw)])
    return root, stats


def _save(repo: Repository, src: Path, root: bytes) -> str:
    return repo.save_snapshot(Snapshot(time=1.0, host="test", paths=[str(src)], tree=root))


@pytest.mark.parametrize("change", ["grows", "shrinks"])
def test_a_file_changed_after_its_stat_is_recorded_as_stored(cli, env, tmp_path, change):
    """The file changes between the reader's fstat and its read (the chunker is where reading starts)."""
    src = tmp_path / "src"
    src.mkdir()
    path = src / "log"
    original = os.urandom(3 << 20)
    path.write_bytes(original)
    with Repository.open(env["SHADOWVAULT_REPOSITORY"], PASSWORD) as repo:

        def change_then_cut(stream):
            if change == "grows":
                with open(path, "ab") as f:
                    f.write(b"appended while being backed up\n" * 4096)
            else:
                os.truncate(path, 1 << 20)
            yield from repo.chunk_file(stream)

        root, stats = _archive_with(repo, src, change_then_cut)
        snap_id = _save(repo, src, root)
        node = next(n for p, n in list_snapshot(repo, root, str(path)))
        stored = sum(len(repo.load_blob(blob)) for blob in node.content)
    now = path.read_bytes()
    assert stored == len(now) != len(original)
    assert node.size == stored and node.error is None
    assert stats.errors == []
    assert [p for p, _ in stats.warnings] == [str(path)]
    assert "changed while it was read" in stats.warnings[0][1]

    listed = json_lines(cli("ls", "--json", snap_id, str(path), env=env).stdout)
    assert [m["size"] for m in listed if m["message_type"] == "node"] == [stored]
    long_line = cli("ls", "-l", snap_id, str(path), env=env).stdout
    assert f" {stored} " in long_line
    target = tmp_path / "restored"
    done = cli("restore", snap_id, "--target", target, env=env)
    assert done.returncode == 0, done.stderr
    assert (target / str(path).lstrip("/")).read_bytes() == now


def test_a_file_growing_during_a_live_backup_is_restored_as_listed(cli, env, tmp_path):
    """A writer appends all along the backup: whatever was read, size, listing and restore agree."""
    src = tmp_path / "src"
    src.mkdir()
    path = src / "growing.log"
    block = os.urandom(64 << 10)
    path.write_bytes(block * 320)  # 20 MiB
    stop = threading.Event()

    def append() -> None:  # at most 32 MiB more: the backup ends whatever the speed of either side
        with open(path, "ab") as f:
            for _ in range(512):
                if stop.is_set():
                    break
                f.write(block)
                f.flush()

    writer = threading.Thread(target=append)
    writer.start()
    try:
        done = cli("backup", "--json", "--provider", "none", str(src), env=env)
    finally:
        stop.set()
        writer.join()
    assert done.returncode == 0, done.stderr
    listed = json_lines(cli("ls", "--json", "latest", str(path), env=env).stdout)
    size = next(m["size"] for m in listed if m["message_type"] == "node")
    target = tmp_path / "restored"
    done = cli("restore", "latest", "--target", target, env=env)
    assert done.returncode == 0, done.stderr
    restored = (target / str(path).lstrip("/")).read_bytes()
    assert len(restored) == size
    with open(path, "rb") as f:
        assert restored == f.read(size)  # the writer only appends: what was stored is a prefix


@pytest.mark.parametrize("seal_processes", [0, 2])
def test_a_file_swapped_for_a_fifo_after_its_stat_does_not_hang_the_backup(
    env, tmp_path, monkeypatch, seal_processes
):
    """Between the walk's lstat and the read, files become FIFOs (no writer ever comes): the backup
    ends, each is an error entry of the snapshot, the other files are stored, in this process and
    in seal workers alike."""
    src = tmp_path / "src"
    src.mkdir()
    for n in range(300):  # enough batches of small files for the seal workers to start
        (src / f"file{n:03}").write_text(f"file {n}\n")
    swapped = {os.fsencode(src / f"file{n:03}") for n in (7, 250)}
    real_lstat = os.lstat

    def lstat_then_swap(path, *args, **kwargs):
        st = real_lstat(path, *args, **kwargs)
        if os.fsencode(path) in swapped:
            os.unlink(path)
            os.mkfifo(path)
        return st

    monkeypatch.setattr(os, "lstat", lstat_then_swap)
    result: dict[str, object] = {}

    def run() -> None:
        with Repository.open(env["SHADOWVAULT_REPOSITORY"], PASSWORD) as repo:
            stats = WalkStats()
            raw = os.fsencode(src)
            root = Archiver(repo, stats=stats, seal_processes=seal_processes).archive([Source(raw, raw)])
            repo.flush()
            result["errors"] = sorted(path for path, _ in stats.errors)
            result["nodes"] = {n.name: n for _, n in list_snapshot(repo, root, str(src)) if n.type == "file"}

    backup = threading.Thread(target=run, daemon=True)
    backup.start()
    backup.join(timeout=120)
    monkeypatch.undo()
    assert not backup.is_alive(), "the backup hangs on a FIFO"
    assert result["errors"] == sorted(os.fsdecode(p) for p in swapped)
    nodes = result["nodes"]
    assert isinstance(nodes, dict) and len(nodes) == 300
    for name in (b"file007", b"file250"):
        assert "not a regular file" in (nodes[name].error or "")
    assert nodes[b"file008"].error is None and nodes[b"file008"].content
