"""The backup options restic users reach for (issue 16), through the CLI as a user runs them:
--dry-run, --files-from, --exclude-file, --exclude-caches, --exclude-larger-than, --stdin, and
--one-file-system beside them. Each check is what a user would look at: the restored bytes, what is
absent after a restore, the repository left untouched, and every skip counted and named."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.inprocess_cli import Shadowvault

CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def repository_bytes(env: dict[str, str]) -> dict[str, bytes]:
    """Every file of the repository, by relative path, with its bytes."""
    root = Path(env["SHADOWVAULT_REPOSITORY"])
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def restored(sv: Shadowvault, target: Path, snap: str = "latest") -> Path:
    done = sv("restore", snap, "--target", str(target))
    assert done.exit_code == 0, done.stderr
    return target


def test_dry_run_says_what_would_change_and_writes_nothing(sv, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "same").write_text("unchanged\n")
    (src / "edited").write_text("before\n")
    first = json_lines(sv("backup", "--provider", "none", "-n", "--json", str(src)).stdout)
    items = {line["item"] for line in first if line["message_type"] == "verbose_status"}
    assert items == {str(src), f"{src}/same", f"{src}/edited"}  # not the directories above it
    assert sv("backup", "--provider", "none", str(src)).exit_code == 0
    (src / "edited").write_text("after, and longer\n")
    (src / "added").write_bytes(os.urandom(200_000))
    before = repository_bytes(sv.env)

    done = sv("backup", "--provider", "none", "--dry-run", "--json", str(src))
    assert done.exit_code == 0, done.stderr
    lines = json_lines(done.stdout)
    assert all("message_type" in line for line in lines)
    actions = {line["item"]: line["action"] for line in lines if line["message_type"] == "verbose_status"}
    assert (actions[f"{src}/added"], actions[f"{src}/edited"]) == ("new", "modified")
    assert f"{src}/same" not in actions
    summary = lines[-1]
    assert summary["message_type"] == "summary" and summary["dry_run"] is True
    assert summary["snapshot_id"] is None
    assert (summary["files_new"], summary["files_changed"], summary["files_unmodified"]) == (1, 1, 1)
    assert summary["added_bytes"] >= 200_000  # random bytes do not compress
    assert repository_bytes(sv.env) == before

    done = sv("backup", "--provider", "none", "-n", str(src))
    assert done.exit_code == 0, done.stderr
    assert f"would add {src}/added" in done.stdout and f"would update {src}/edited" in done.stdout
    assert "dry run: nothing was saved" in done.stderr
    assert repository_bytes(sv.env) == before
    listed = json.loads(sv("snapshots", "--json").stdout)
    assert len(listed) == 1


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Sources with a bit of everything the exclude options look at."""
    src = tmp_path / "src"
    for name in ("listed", "unlisted", "cache", "fake-cache", "logs"):
        (src / name).mkdir(parents=True)
    (src / "listed" / "small").write_text("small\n")
    (src / "listed" / "big").write_bytes(b"x" * (2 << 20))
    (src / "unlisted" / "file").write_text("not in the list\n")
    (src / "cache" / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE + b"\n# a cache\n")
    (src / "cache" / "blob").write_text("cached\n")
    (src / "fake-cache" / "CACHEDIR.TAG").write_bytes(b"Signature: not the right one\n")
    (src / "fake-cache" / "blob").write_text("kept\n")
    (src / "logs" / "app.log").write_text("log\n")
    (src / "logs" / "app.txt").write_text("text\n")
    return src


def test_files_from_and_every_exclude_rule_leave_out_what_they_say_and_count_it(sv, tmp_path, tree):
    listing = tmp_path / "files.txt"
    listing.write_text(
        f"# what to back up\n{tree}/listed\n\n{tree}/cache\n  \n{tree}/fake-cache\n{tree}/logs\n"
    )
    patterns = tmp_path / "excludes.txt"
    patterns.write_text("# logs are rotated anyway\n*.log\n\n")
    done = sv(
        "backup", "--provider", "none", "--json", "--files-from", listing, "--exclude-file", patterns,
        "--exclude-caches", "--exclude-larger-than", "1M",
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    summary = json_lines(done.stdout)[-1]
    assert summary["skipped"] == {"larger_than": 1, "cache_dir": 1, "excluded": 1}
    skipped = {entry["path"]: entry["reason"] for entry in summary["skipped_paths"]}
    assert "larger than" in skipped[f"{tree}/listed/big"]
    assert "CACHEDIR.TAG" in skipped[f"{tree}/cache"]

    snaps = json.loads(sv("snapshots", "--json").stdout)
    assert sorted(snaps[-1]["paths"]) == sorted(
        f"{tree}/{n}" for n in ("listed", "cache", "fake-cache", "logs")
    )
    out = restored(sv, tmp_path / "out") / str(tree).lstrip("/")
    present = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert present == {
        "listed/small",
        "cache/CACHEDIR.TAG",
        "fake-cache/CACHEDIR.TAG",
        "fake-cache/blob",
        "logs/app.txt",
    }
    assert (out / "cache" / "CACHEDIR.TAG").read_bytes().startswith(CACHEDIR_SIGNATURE)

    done = sv("backup", "--provider", "none", "--exclude-larger-than", "1M", str(tree / "listed"))
    assert done.exit_code == 0, done.stderr
    assert f"{tree}/listed/big" in done.stderr and "larger than" in done.stderr
    assert "skipped 1" in done.stderr


def test_a_file_just_over_the_size_limit_is_named_with_both_sizes_told_apart(sv, tmp_path):
    """--exclude-larger-than 4kb is 4000 bytes: a 4001-byte file left out must not read as
    "larger than 3.9 KiB (3.9 KiB)", which looks like a wrong decision."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "over").write_bytes(b"x" * 4001)
    (src / "at").write_bytes(b"x" * 4000)
    done = sv("backup", "--provider", "none", "--exclude-larger-than", "4kb", str(src))
    assert done.exit_code == 0, done.stderr
    assert f"skipped {src}/over: larger than 4000 B (4001 B)" in done.stderr.splitlines()
    assert f"{src}/at" not in done.stderr


def test_files_from_raw_takes_nul_separated_names(sv, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    odd = src / "line\nbreak # not a comment"
    odd.write_text("odd name\n")
    (src / "other").write_text("left out\n")
    listing = tmp_path / "files.nul"
    listing.write_bytes(os.fsencode(odd) + b"\0")
    done = sv("backup", "--provider", "none", "--files-from-raw", listing)
    assert done.exit_code == 0, done.stderr
    out = restored(sv, tmp_path / "out") / str(src).lstrip("/")
    assert sorted(p.name for p in out.iterdir()) == [odd.name]
    assert (out / odd.name).read_text() == "odd name\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exclude-larger-than", "12Q"], "--exclude-larger-than"),
        (["--exclude-larger-than", "-5"], "--exclude-larger-than"),
        (["--files-from", "/nonexistent/list"], "/nonexistent/list"),
        (["--exclude-file", "/nonexistent/patterns"], "/nonexistent/patterns"),
        (["--stdin", "/etc"], "--stdin"),
    ],
)
def test_bad_option_values_are_one_clear_line(sv, tmp_path, args, message):
    done = sv("backup", "--provider", "none", *args, str(tmp_path))
    assert done.exit_code == 2, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [("backup", "--provider", "none", "--exclude"), ("find",)])
def test_an_invalid_glob_is_named_without_a_position_in_a_regex_the_user_never_wrote(sv, tmp_path, command):
    done = sv(*command, "[z-a]", *([str(tmp_path)] if command[0] == "backup" else []))
    assert done.exit_code == 2, done.stderr
    assert done.stderr == "shadowvault: error: invalid pattern '[z-a]': bad character range z-a\n"


def test_a_dump_piped_to_stdin_is_one_file_in_the_snapshot(sv, tmp_path):
    dump = "".join(f"INSERT INTO t VALUES ({i}, 'r\u00e9sum\u00e9');\n" for i in range(20_000))
    done = sv("backup", "--stdin", "--stdin-filename", "db.sql", "--json", input=dump)
    assert done.exit_code == 0, done.stderr
    summary = json_lines(done.stdout)[-1]
    assert summary["message_type"] == "summary" and summary["files_new"] == 1
    snaps = json.loads(sv("snapshots", "--json").stdout)
    assert snaps[-1]["paths"] == ["/db.sql"]

    out = restored(sv, tmp_path / "out")
    assert [p.name for p in out.iterdir()] == ["db.sql"]
    assert (out / "db.sql").read_bytes() == dump.encode()
    assert stat.S_IMODE((out / "db.sql").stat().st_mode) == 0o644


def test_one_file_system_with_the_new_excludes(sv, tmp_path, mounts):
    src = tmp_path / "src"
    (src / "mnt").mkdir(parents=True)
    (src / "top").write_text("top\n")
    (src / "huge").write_bytes(b"y" * (3 << 20))
    mounts("-t", "tmpfs", "-o", "size=8m", "tmpfs", src / "mnt")
    (src / "mnt" / "inside").write_text("on tmpfs\n")
    done = sv("backup", "--provider", "none", "--json", "-x", "--exclude-larger-than", "2MiB", str(src))
    assert done.exit_code == 0, done.stderr
    warned = [m["message"] for m in json_lines(done.stderr) if m["message_type"] == "warning"]
    assert any(f"{src}/mnt" in w for w in warned), done.stderr
    assert json_lines(done.stdout)[-1]["skipped"] == {"larger_than": 1}
    out = restored(sv, tmp_path / "out") / str(src).lstrip("/")
    assert (out / "top").read_text() == "top\n"
    assert (out / "mnt").is_dir() and not any((out / "mnt").iterdir())
    assert not (out / "huge").exists()
