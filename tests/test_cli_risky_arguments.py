"""Arguments a script can get wrong (an unset variable, a zero, a huge number, stray bytes), found by
an audit that typed them as a restic user would: each one lost snapshots, read the wrong tree,
accepted the wrong password, recorded what no listing could show, or ended in a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.inprocess_cli import Shadowvault, one_error_line, run


def snapshot_ids(sv: Shadowvault) -> list[str]:
    return [s["id"] for s in json.loads(sv.ok("snapshots", "--json"))]


def three_snapshots(sv: Shadowvault, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for n in range(3):
        (src / "f").write_text(str(n))
        sv.ok("backup", "--provider", "none", "-q", src)
    return src


def test_a_zero_duration_is_no_rule_and_a_huge_one_keeps_everything(sv: Shadowvault, tmp_path: Path) -> None:
    three_snapshots(sv, tmp_path)
    refused = sv("forget", "--keep-within", "0d")  # was: every snapshot but the newest removed
    assert refused.exit_code == 2 and "no policy" in one_error_line(refused)
    assert len(snapshot_ids(sv)) == 3
    kept_two = json.loads(sv.ok("forget", "--dry-run", "--json", "--keep-within", "0h", "--keep-last", "2"))
    assert [len(group["keep"]) for group in kept_two["groups"]] == [2]
    for value in ("9999y", "99999999999y", "100000000000d"):  # was: an internal error
        planned = json.loads(sv.ok("forget", "--dry-run", "--json", "--keep-within", value))
        assert [len(g["keep"]) for g in planned["groups"]] == [3] and not planned["groups"][0]["remove"]
    daily = json.loads(sv.ok("forget", "--dry-run", "--json", "--keep-within-daily", "1000000y"))
    assert [len(g["keep"]) for g in daily["groups"]] == [1]  # one a day, the three made today


def test_forgetting_one_snapshot_named_twice_removes_and_counts_it_once(
    sv: Shadowvault, tmp_path: Path
) -> None:
    three_snapshots(sv, tmp_path)
    first = snapshot_ids(sv)[0]
    done = sv("forget", "--json", first[:8], first)
    assert done.exit_code == 0, done.stderr
    assert [item["id"] for item in json.loads(done.stdout)["groups"][0]["remove"]] == [first]
    assert len(snapshot_ids(sv)) == 2


def test_an_empty_path_is_not_the_current_directory(sv: Shadowvault, tmp_path: Path) -> None:
    os.chdir(tmp_path)  # a cron job's `backup "$DIR"` with DIR unset
    (tmp_path / "here").write_text("not asked for")
    refused = sv("backup", "--provider", "none", "")
    assert refused.exit_code == 2 and "empty path" in one_error_line(refused)
    assert snapshot_ids(sv) == []


def test_a_password_is_its_bytes_whichever_way_it_comes(tmp_path: Path) -> None:
    """Decoded with replacement, \\xff and \\xfe were one password; Python's line breaks cut \\x1c."""
    repo = tmp_path / "repo"
    env = {"SHADOWVAULT_REPOSITORY": str(repo), "SHADOWVAULT_NO_DAEMON": "1"}
    secret = tmp_path / "secret"
    secret.write_bytes(b"\xffab\x1ccd\r\n")
    Repository.init(repo, os.fsdecode(b"\xffab\x1ccd"), kdf_params=FAST_KDF).close()
    assert run(env, "snapshots", "--password-file", secret).exit_code == 0
    assert run(env, "snapshots", "--password-command", f"cat {secret}").exit_code == 0
    assert run({**env, "SHADOWVAULT_PASSWORD": os.fsdecode(b"\xffab\x1ccd")}, "snapshots").exit_code == 0
    for other in (b"\xfeab\x1ccd\n", b"\xffab\n", b"?ab\x1ccd\n"):
        (tmp_path / "other").write_bytes(other)
        for how in (
            ("--password-file", tmp_path / "other"),
            ("--password-command", f"cat {tmp_path / 'other'}"),
        ):
            assert "wrong password" in one_error_line(run(env, "snapshots", *how))
    assert "wrong password" in one_error_line(run({**env, "SHADOWVAULT_PASSWORD": "\udcc0"}, "snapshots"))
    wide = tmp_path / "wide"  # 40,000 characters, 80,000 bytes: the bound is on bytes, nothing is cut
    wide.write_bytes("é".encode() * 40_000)
    assert "longer than 64 KiB" in one_error_line(run(env, "snapshots", "--password-file", wide))


@pytest.fixture
def deep_trees(tmp_path: Path) -> Iterator[Path]:
    """A directory for trees too deep for pytest's own clean-up (shutil.rmtree recurses): rm -rf
    removes them, whatever the test did."""
    place = tmp_path / "deep"
    place.mkdir()
    try:
        yield place
    finally:
        subprocess.run(["rm", "-rf", place], check=True)


def test_a_tree_2000_directories_deep_is_backed_up_and_restored(cli, deep_trees: Path) -> None:
    """Any user who may write into a backed-up tree could stop its every backup (RecursionError at
    ~500 levels); paths reach PATH_MAX at ~2,000."""
    src = deep_trees / "src"
    deep = src.joinpath(*["y"] * 1990)
    subprocess.run(["mkdir", "-p", deep], check=True)  # pathlib's and os.makedirs recurse
    (deep / "f").write_text("at the bottom")
    env = {
        "SHADOWVAULT_PASSWORD": "pw",
        "SHADOWVAULT_NO_DAEMON": "1",
        "SHADOWVAULT_REPOSITORY": str(deep_trees / "r"),
    }
    for args in (
        ["init"],
        ["backup", "--provider", "none", "-q", src],
        ["restore", "latest", "--target", deep_trees / "out"],
        ["check"],
    ):
        done = cli(*args, env=env)
        assert done.returncode == 0, done.stderr
    found = subprocess.run(  # the restored path is longer than PATH_MAX: find walks down to it
        ["find", deep_trees / "out", "-name", "f", "-execdir", "cat", "{}", ";"],
        capture_output=True,
        text=True,
    )
    assert found.stdout == "at the bottom"


def test_a_time_a_snapshot_cannot_record_is_refused(sv: Shadowvault, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    refused = sv("backup", "--provider", "none", "--time", "9999-12-31 12:00:00", tmp_path / "f")
    assert refused.exit_code == 2 and "outside the years" in one_error_line(refused)  # was: saved, unreadable
    assert snapshot_ids(sv) == []


def test_tags_and_host_names_that_would_break_listings_are_refused(sv: Shadowvault, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    for args in (("--tag", "x\ny"), ("--tag", "esc\x1b[31m"), ("--host", "a\nb"), ("--tag", "t" * 300)):
        refused = sv("backup", "--provider", "none", *args, tmp_path / "f")
        assert refused.exit_code == 2, refused.stderr
        one_error_line(refused)
    assert snapshot_ids(sv) == []
    sv.ok("backup", "--provider", "none", "-q", "--tag", "fine", "--host", "web-1", tmp_path / "f")
    assert "not a tag" in one_error_line(sv("tag", "--add", "bad\tone"))
    sv.ok("tag", "--remove", "never\nrecorded")  # removing cannot record anything: taken as given


def test_check_refuses_read_data_with_a_subset(sv: Shadowvault) -> None:
    refused = sv("check", "--read-data", "--read-data-subset", "5%")  # was: read everything
    assert refused.exit_code == 2 and "give one of them" in one_error_line(refused)


def test_a_rewrite_that_would_empty_a_snapshot_keeps_it(sv: Shadowvault, tmp_path: Path) -> None:
    three_snapshots(sv, tmp_path)
    before = snapshot_ids(sv)
    done = sv("rewrite", "--exclude", "*", "--forget", "--json")
    assert done.exit_code == 3, done.stderr
    summary = [json.loads(line) for line in done.stdout.splitlines()][-1]
    assert sorted(summary["emptied"]) == sorted(before) and summary["snapshots_rewritten"] == 0
    assert sorted(snapshot_ids(sv)) == sorted(before)


def test_options_only_a_component_restore_reads_are_refused_elsewhere(
    sv: Shadowvault, tmp_path: Path
) -> None:
    (tmp_path / "f").write_text("x")
    sv.ok("backup", "--provider", "none", "-q", tmp_path / "f")
    for args in (
        ("--target", tmp_path / "out", "--map", "/a=/b"),
        ("--map", "/a=/b"),
        ("--target", tmp_path / "out", "--fix-fstab", "--no-packages"),
    ):
        refused = sv("restore", "latest", *args)
        assert refused.exit_code == 2 and "go with --component" in one_error_line(refused)
    assert not (tmp_path / "out").exists()


def test_a_choice_missing_is_one_plain_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shadowvault.cli.launch", "cat"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "\\n" not in done.stderr and "Choose from: config," in done.stderr


def test_a_value_quoted_in_a_usage_error_keeps_its_spaces() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shadowvault.cli.launch", "forget", "--keep-last", "2  x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "'2  x' is not a valid integer" in done.stderr, done.stderr


def test_a_crafted_host_name_stays_on_its_line_in_forget(
    sv: Shadowvault, env: dict[str, str], tmp_path: Path
) -> None:
    """Whoever holds the password can write any host name (older versions recorded one too)."""
    three_snapshots(sv, tmp_path)
    with Repository.open(env["SHADOWVAULT_REPOSITORY"], PASSWORD) as repo:
        _, snapshot = next(iter(repo.list_snapshots()))
        repo.save_snapshot(msgspec.structs.replace(snapshot, host="a\nb\x1b[2J"))
    for args in (("forget", "--dry-run", "--keep-last", "1"), ("snapshots", "--group-by", "host")):
        shown = sv.ok(*args)
        assert "host a\\nb\\x1b[2J" in shown and "\x1b" not in shown and "a\nb" not in shown
