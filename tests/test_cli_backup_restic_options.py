"""More of restic's backup and restore options, through the CLI as a user runs them:
--exclude-if-present, --iexclude(-file), restore --iinclude/--iexclude, --time, --ignore-inode,
--ignore-ctime and --with-atime. Each check is what a user looks at: what `ls --json` lists, the
restored bytes and times, the snapshot's time in `snapshots --json`, and which files a second
backup read again (the summary's files_changed / files_unmodified)."""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.inprocess_cli import Shadowvault

CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


def json_lines(text: str) -> list[dict]:
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all("message_type" in line for line in lines)
    return lines


def backed_up(sv: Shadowvault, *args: object) -> dict:
    """Run `backup --provider none --json ARGS`; its summary."""
    done = sv("backup", "--provider", "none", "--json", *args)
    assert done.exit_code == 0, done.stderr
    return json_lines(done.stdout)[-1]


def listed(sv: Shadowvault, root: Path, snap: str = "latest") -> set[str]:
    """The paths below `root` the snapshot holds, relative to it (ls --json)."""
    done = sv("ls", "--json", snap)
    assert done.exit_code == 0, done.stderr
    nodes = [line["path"] for line in json_lines(done.stdout) if line["message_type"] == "node"]
    return {os.path.relpath(p, root) for p in nodes if p.startswith(f"{root}/")}


def test_exclude_if_present_keeps_only_the_tag_of_a_tagged_directory(sv, tmp_path):
    src = tmp_path / "src"
    for name in ("plain", "tagged", "headed", "wrong-header", "cache"):
        (src / name).mkdir(parents=True)
        (src / name / "data").write_text(f"{name}\n")
    (src / "tagged" / ".nobackup").write_text("")
    (src / "headed" / ".tag").write_bytes(b"HDR: skip me\n")
    (src / "wrong-header" / ".tag").write_bytes(b"something else\n")
    (src / "cache" / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE + b"\n")

    summary = backed_up(
        sv, "--exclude-if-present", ".nobackup", "--exclude-if-present", ".tag:HDR", "--exclude-caches", src
    )
    assert summary["skipped"] == {"if_present": 2, "cache_dir": 1}
    reasons = {entry["path"]: entry["reason"] for entry in summary["skipped_paths"]}
    assert reasons[f"{src}/tagged"] == "holds .nobackup: 1 entry left out"
    assert listed(sv, src) == {
        "plain", "plain/data", "tagged", "tagged/.nobackup", "headed", "headed/.tag",
        "wrong-header", "wrong-header/.tag", "wrong-header/data", "cache", "cache/CACHEDIR.TAG",
    }  # fmt: skip

    # restic's --exclude-caches is this very rule: counted as a cache directory
    summary = backed_up(sv, "--exclude-if-present", f"CACHEDIR.TAG:{CACHEDIR_SIGNATURE.decode()}", src)
    assert summary["skipped"] == {"cache_dir": 1}
    done = sv("restore", "latest", "--target", tmp_path / "out")
    assert done.exit_code == 0, done.stderr
    out = tmp_path / "out" / str(src).lstrip("/")
    assert (out / "tagged" / "data").read_text() == "tagged\n"
    assert not (out / "cache" / "data").exists() and (out / "cache" / "CACHEDIR.TAG").is_file()


def test_iexclude_and_iexclude_file_ignore_case_and_restore_iinclude_iexclude(sv, tmp_path):
    src = tmp_path / "src"
    (src / "Sub").mkdir(parents=True)
    for name, text in {"A.TXT": "a", "b.txt": "b", "Sub/C.Txt": "c", "keep.md": "k", "Notes.MD": "n"}.items():
        (src / name).write_text(text)
    patterns = tmp_path / "ipatterns"
    patterns.write_text("# case does not matter\n*.md\n")
    summary = backed_up(sv, "--iexclude", "*.txt", "--iexclude-file", patterns, "--exclude", "*.TXT", src)
    assert summary["skipped"] == {"excluded": 5}
    assert listed(sv, src) == {"Sub"}

    backed_up(sv, src)
    done = sv("restore", "latest", "--target", tmp_path / "txt", "--iinclude", "*.TXT")
    assert done.exit_code == 0, done.stderr
    got = tmp_path / "txt" / str(src).lstrip("/")
    assert sorted(str(p.relative_to(got)) for p in got.rglob("*") if p.is_file()) == [
        "A.TXT", "Sub/C.Txt", "b.txt",
    ]  # fmt: skip
    assert (got / "Sub" / "C.Txt").read_text() == "c"
    done = sv("restore", "latest", "--target", tmp_path / "rest", "--iexclude", "*.txt", "--iexclude", "*.MD")
    assert done.exit_code == 0, done.stderr
    rest = tmp_path / "rest" / str(src).lstrip("/")
    assert [str(p.relative_to(rest)) for p in rest.rglob("*")] == ["Sub"]
    done = sv("restore", "latest", "--target", tmp_path / "dry", "--dry-run", "--json", "--iinclude", "*.md")
    creates = [line["path"] for line in json_lines(done.stdout) if line.get("action") == "create"]
    assert sorted(os.path.basename(p) for p in creates if "." in os.path.basename(p)) == [
        "Notes.MD",
        "keep.md",
    ]


def test_time_sets_the_snapshot_time_and_the_parent_is_not_newer(sv, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_text("old data\n")
    assert backed_up(sv, src)["files_new"] == 1
    summary = backed_up(sv, "--time", "2019-01-02 03:04:05", src)
    assert summary["parent"] is None and summary["files_new"] == 1  # the newer snapshot is no parent
    snaps = json.loads(sv("snapshots", "--json").stdout)
    when = datetime.datetime(2019, 1, 2, 3, 4, 5).astimezone().timestamp()
    old = [s for s in snaps if s["id"] == summary["snapshot_id"]]
    assert old[0]["time"] == when and snaps[0]["id"] == summary["snapshot_id"]  # oldest first

    summary = backed_up(sv, "--time", "2019-06-01 00:00:00", src)
    assert summary["parent"] == old[0]["id"] and summary["files_unmodified"] == 1

    done = sv("backup", "--stdin", "--stdin-filename", "dump.sql", "--time", "2020-02-03 04:05:06", input="x")
    assert done.exit_code == 0, done.stderr
    out = tmp_path / "out"
    assert sv("restore", "latest", "--path", "/dump.sql", "--target", out).exit_code == 0
    assert (out / "dump.sql").stat().st_mtime == datetime.datetime(2020, 2, 3, 4, 5, 6).timestamp()


def test_ignore_inode_and_ignore_ctime_relax_the_incremental_test(sv, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "steady").write_text("steady\n")
    (src / "moved").write_text("the same bytes\n")

    def replace() -> None:
        """A new inode with the same size and mtime (and a new ctime), as a network mount shows it."""
        shutil.copy2(src / "moved", tmp_path / "copy")
        os.replace(tmp_path / "copy", src / "moved")

    def counts(summary: dict) -> tuple[int, int]:
        return summary["files_changed"], summary["files_unmodified"]

    backed_up(sv, src)
    replace()
    assert counts(backed_up(sv, src)) == (1, 1)
    replace()
    assert counts(backed_up(sv, "--ignore-ctime", src)) == (1, 1)  # the inode still differs
    replace()
    assert counts(backed_up(sv, "--ignore-inode", src)) == (1, 1)  # the ctime still differs
    replace()
    assert counts(backed_up(sv, "--ignore-inode", "--ignore-ctime", src)) == (0, 2)
    (src / "steady").chmod(0o600)  # a new ctime only
    assert counts(backed_up(sv, "--ignore-ctime", src)) == (0, 2)
    (src / "steady").chmod(0o644)
    assert counts(backed_up(sv, src)) == (1, 1)

    done = sv("restore", "latest", "--target", tmp_path / "out")
    assert done.exit_code == 0, done.stderr
    assert (tmp_path / "out" / str(src).lstrip("/") / "moved").read_text() == "the same bytes\n"


def test_access_times_are_recorded_with_with_atime_only(sv, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    file = src / "file"
    file.write_text("read often\n")
    atime = datetime.datetime(2001, 1, 1).timestamp()
    os.utime(file, (atime, file.stat().st_mtime))
    mtime_ns = file.stat().st_mtime_ns

    def restored_times(*args: str) -> tuple[int, int]:
        backed_up(sv, *args, src)
        target = tmp_path / f"out{len(args)}"
        assert sv("restore", "latest", "--target", target).exit_code == 0
        st = (target / str(file).lstrip("/")).stat()
        return st.st_atime_ns, st.st_mtime_ns

    assert restored_times() == (mtime_ns, mtime_ns)  # restic's default: the atime is the mtime
    assert restored_times("--with-atime") == (int(atime * 1e9), mtime_ns)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exclude-if-present", ":HDR"], "--exclude-if-present takes a file name"),
        (["--exclude-if-present", ""], "--exclude-if-present takes a file name"),
        (["--exclude-if-present", "sub/.tag"], "--exclude-if-present takes a file name"),
        (["--time", "yesterday"], "--time takes a local time like"),
        (["--time", "2019-13-02 03:04:05"], "'2019-13-02 03:04:05'"),
        (["--time", "2019-01-02"], "YYYY-MM-DD HH:MM:SS"),
        (["--iexclude-file", "/nonexistent/patterns"], "--iexclude-file /nonexistent/patterns"),
        (["--iexclude", ""], "empty pattern"),
    ],
)
def test_bad_values_are_one_clear_line(sv, tmp_path, args, message):
    done = sv("backup", "--provider", "none", *args, tmp_path)
    assert done.exit_code == 2, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_restore_iinclude_with_a_component_is_one_clear_line(sv, tmp_path):
    done = sv("restore", "latest", "--component", "files", "--target-root", tmp_path, "--iinclude", "*.x")
    assert done.exit_code == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "--iinclude and --iexclude go with a files restore" in done.stderr
