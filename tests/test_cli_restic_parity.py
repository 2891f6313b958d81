"""Everyday restic 0.14 habits, typed as a restic user moving over types them: each test is a
difference found by running restic and shadowvault side by side on the same small tree."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from tests.inprocess_cli import Shadowvault, one_error_line


def listed(sv: Shadowvault, *args: object) -> list[tuple[str, list[str]]]:
    """(host, tags) of each snapshot `snapshots --json ARGS` lists, oldest first."""
    return [(s["host"], s["tags"]) for s in json.loads(sv.ok("snapshots", "--json", *args))]


def test_tag_lists_are_restics_comma_separated_lists(sv: Shadowvault, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    sv.ok("backup", "--provider", "none", "-q", "--tag", "a", src)
    sv.ok("backup", "--provider", "none", "-q", "--tag", "a,b", src)  # restic: the tags a and b
    sv.ok("backup", "--provider", "none", "-q", "--tag", "b", "--host", "other", src)
    assert [tags for _, tags in listed(sv)] == [["a"], ["a", "b"], ["b"]]

    assert [tags for _, tags in listed(sv, "--tag", "a,b")] == [["a", "b"]]  # both; repeated: either
    assert [tags for _, tags in listed(sv, "--tag", "a", "--tag", "b")] == [["a"], ["a", "b"], ["b"]]
    hosts = {host for host, _ in listed(sv)}
    assert len(listed(sv, *[arg for host in hosts for arg in ("--host", host)])) == 3  # any of the hosts
    assert [tags for _, tags in listed(sv, "--host", "other")] == [["b"]]

    sv.ok("tag", "--tag", "b", "--add", "x, y")
    assert [tags for _, tags in listed(sv, "--tag", "x,y")] == [["a", "b", "x", "y"], ["b", "x", "y"]]
    sv.ok("tag", "--tag", "x", "--remove", "x,y")
    assert [tags for _, tags in listed(sv)] == [["a"], ["a", "b"], ["b"]]

    # --keep-tag a,b keeps what carries both; repeated, what carries either list
    forget = json.loads(sv.ok("forget", "--dry-run", "--json", "--group-by", "", "--keep-tag", "a,b"))
    assert [[s["tags"] for s in g["keep"]] for g in forget["groups"]] == [[["a", "b"]]]


def test_exclude_file_expands_variables_as_restic(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "src"
    for name in ("keep", "cache", "logs"):
        (src / name).mkdir(parents=True)
        (src / name / "f").write_text(name)
    rules = tmp_path / "excludes"
    rules.write_text("# a comment\n\n  $SRC/cache  \n${SRC}/$UNSET_VARIABLE_HERE/logs\n")
    sv = Shadowvault({**env, "SRC": str(src)})
    sv.ok("backup", "--provider", "none", "-q", "--exclude-file", rules, src)
    paths = [json.loads(line).get("path") for line in sv.ok("ls", "--json", "latest").splitlines()]
    assert sorted(p for p in paths if p and p.startswith(f"{src}/")) == [f"{src}/keep", f"{src}/keep/f"]


def test_files_from_expands_globs_as_restic(sv: Shadowvault, tmp_path: Path) -> None:
    for name in ("ann/docs", "bob/docs", ".hidden/docs", "ann/tmp"):
        (tmp_path / "home" / name).mkdir(parents=True)
    listing = tmp_path / "list"
    listing.write_text(f"# the users' documents\n{tmp_path}/home/*/docs\n")
    sv.ok("backup", "--provider", "none", "-q", "--files-from", listing)
    snapshot = json.loads(sv.ok("snapshots", "--json"))[-1]
    assert snapshot["paths"] == [f"{tmp_path}/home/{name}/docs" for name in (".hidden", "ann", "bob")]

    listing.write_text(f"{tmp_path}/home/*/nothing\n")  # matches nothing: named, not silently skipped
    done = sv("backup", "--provider", "none", "-q", "--files-from", listing)
    assert done.exit_code == 1 and "home/*/nothing: no such file or directory" in done.stderr


def test_json_lines_carry_restics_field_names(sv: Shadowvault, tmp_path: Path) -> None:
    """What restic users' jq filters read: snapshots' hostname, ls's struct_type, diff's modifier and
    source_snapshot/target_snapshot (beside our own names)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "old").write_text("1")
    sv.ok("backup", "--provider", "none", "-q", src)
    (src / "old").unlink()
    (src / "new").write_text("2")
    sv.ok("backup", "--provider", "none", "-q", src)
    first, second = json.loads(sv.ok("snapshots", "--json"))
    assert first["hostname"] == first["host"]
    kinds = {json.loads(line)["struct_type"] for line in sv.ok("ls", "--json", "latest").splitlines()}
    assert kinds == {"snapshot", "node"}
    lines = [json.loads(line) for line in sv.ok("diff", "--json", first["id"], second["id"]).splitlines()]
    modifiers = {line["path"]: line["modifier"] for line in lines if line["message_type"] == "change"}
    assert modifiers[f"{src}/old"] == "-" and modifiers[f"{src}/new"] == "+"
    assert (lines[-1]["source_snapshot"], lines[-1]["target_snapshot"]) == (first["id"], second["id"])


def test_snapshots_and_forget_take_path_as_every_other_command_does(
    sv: Shadowvault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ls --path DIR/` and `--path .` find the snapshots of DIR: so do `snapshots` and `forget`."""
    src = tmp_path / "src"
    src.mkdir()
    sv.ok("backup", "--provider", "none", "-q", src)
    monkeypatch.chdir(src)
    for given in (f"{src}/", "."):
        assert len(json.loads(sv.ok("snapshots", "--json", "--path", given))) == 1
        forget = json.loads(sv.ok("forget", "--json", "--dry-run", "--keep-last", "1", "--path", given))
        assert [len(group["keep"]) for group in forget["groups"]] == [1]


def test_check_read_data_subset_takes_restics_size_form(sv: Shadowvault, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for n in range(3):  # a pack per backup
        (src / f"f{n}").write_bytes(bytes([n]) * 5000)
        sv.ok("backup", "--provider", "none", "-q", src)
    some = json.loads(sv.ok("check", "--json", "--read-data-subset", "1K"))
    assert some["packs"] >= 3 and some["packs_read"] == 1  # a share of the size, at least one pack
    every = json.loads(sv.ok("check", "--json", "--read-data-subset", "2G"))
    assert every["packs_read"] == every["packs"]
    for wrong in ("0", "12Q", "0/3", "0%"):
        done = sv("check", "--read-data-subset", wrong)
        assert done.exit_code == 2 and "a size like 500M" in done.stderr


def test_diff_takes_restics_metadata_flag(sv: Shadowvault, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("1")
    sv.ok("backup", "--provider", "none", "-q", src)
    (src / "f").chmod(0o600)
    sv.ok("backup", "--provider", "none", "-q", src)
    first, second = (s["id"] for s in json.loads(sv.ok("snapshots", "--json")))
    assert f"U    {src}/f" in sv.ok("diff", "--metadata", first, second).splitlines()


def test_repository_and_password_options_go_before_the_command(env: dict[str, str], tmp_path: Path) -> None:
    """`restic -r REPO snapshots`: the habit works; the command's own option, typed after it, wins;
    either wins over the environment."""
    password = tmp_path / "password"
    password.write_text(env["SHADOWVAULT_PASSWORD"] + "\n")
    elsewhere = {**env, "SHADOWVAULT_REPOSITORY": str(tmp_path / "none"), "SHADOWVAULT_PASSWORD": "wrong"}
    sv = Shadowvault(elsewhere)
    repo = env["SHADOWVAULT_REPOSITORY"]
    assert json.loads(sv.ok("-r", repo, "--password-file", password, "snapshots", "--json")) == []
    assert json.loads(sv.ok("--repo", str(tmp_path / "none"), "snapshots", "-r", repo, "--json",
                         "--password-file", password)) == []  # fmt: skip
    done = sv("-r", str(tmp_path / "none"), "--password-file", password, "snapshots")
    assert done.exit_code == 1 and "none does not exist" in done.stderr


def test_backup_says_which_parent_snapshot_it_used(sv: Shadowvault, tmp_path: Path) -> None:
    """restic's "using parent snapshot ID" / "no parent snapshot found": a user who expected an
    incremental and saw every file read learns why."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    first = sv("backup", "--provider", "none", src)
    assert "no parent snapshot of these paths on this host: every file was read" in first.stderr
    parent = json.loads(sv.ok("snapshots", "--json"))[0]["id"]
    second = sv("backup", "--provider", "none", src)
    assert f"using parent snapshot {parent[:8]}" in second.stderr
    forced = sv("backup", "--provider", "none", "--force", src)
    assert "--force: every file was read" in forced.stderr
    assert "parent" not in sv("backup", "--provider", "none", "-q", src).stderr


def test_find_oldest_and_newest_bound_the_modification_time(sv: Shadowvault, tmp_path: Path) -> None:
    """restic find's -O/--oldest and -N/--newest, in its time forms (local time)."""
    src = tmp_path / "src"
    src.mkdir()
    for name, when in (("old", "2020-05-01 12:00:00"), ("new", "2024-01-01 08:00:00")):
        (src / name).write_text(name)
        stamp = datetime.strptime(when, "%Y-%m-%d %H:%M:%S").timestamp()
        os.utime(src / name, (stamp, stamp))
    sv.ok("backup", "--provider", "none", "-q", src)

    def found(*bounds: str) -> list[str]:
        lines = map(json.loads, sv.ok("find", "--json", "old", "new", *bounds).splitlines())
        return sorted(m["path"].rsplit("/", 1)[1] for m in lines if m["message_type"] == "match")

    assert found() == ["new", "old"]
    assert found("--oldest", "2021-01-01") == ["new"]
    assert found("--newest", "2020-05-01 12:00") == ["old"]  # the bound itself is in
    assert found("-O", "2020-05-01T12:00:00", "-N", "2023-12-31") == ["old"]
    assert found("--oldest", "2024-01-01 08:00:01") == []
    refused = sv("find", "x", "--newest", "yesterday")
    assert refused.exit_code == 2 and "--newest takes a local time like" in refused.stderr
    crossed = sv("find", "x", "-O", "2021-01-01", "-N", "2020-01-01")
    assert crossed.exit_code == 2 and "nothing could match" in crossed.stderr


def test_a_path_given_that_an_exclude_pattern_matches_is_left_out_and_said(
    sv: Shadowvault, tmp_path: Path
) -> None:
    """restic 0.14 leaves such a path out without a word; we stored a directory as an empty one (and
    a file whole): left out as restic does, with a warning, and an error when nothing is left."""
    keep, logs = tmp_path / "keep", tmp_path / "logs"
    for directory in (keep, logs):
        directory.mkdir()
        (directory / "f.log").write_text("x")
    (keep / "f").write_text("x")

    def stored() -> list[str]:
        lines = map(json.loads, sv.ok("ls", "--json", "latest").splitlines())
        return sorted(line["path"] for line in lines if line.get("path", "").startswith(str(tmp_path) + "/"))

    done = sv("backup", "--provider", "none", keep, logs, "--exclude", str(logs))
    assert done.exit_code == 0, done.stderr
    assert f"{logs}: given to back up, but an exclude pattern matches it" in done.stderr
    assert stored() == [str(keep), f"{keep}/f", f"{keep}/f.log"]
    assert json.loads(sv.ok("snapshots", "--json"))[-1]["paths"] == [str(keep)]

    done = sv("backup", "--provider", "none", "--json", f"{keep}/f", f"{keep}/f.log", "--exclude", "*.log")
    assert done.exit_code == 0, done.stderr
    warning = json.loads(done.stderr.splitlines()[0])
    assert warning["message_type"] == "warning" and warning["message"].startswith(f"{keep}/f.log: ")
    assert stored() == [str(keep), f"{keep}/f"]

    done = sv("backup", "--provider", "none", logs, "--iexclude", "LOGS")
    assert done.exit_code == 2 and "an exclude pattern matches every path given" in one_error_line(done)
    assert len(json.loads(sv.ok("snapshots", "--json"))) == 2


def test_backup_vv_lists_each_file_and_directory_as_restic(sv: Shadowvault, tmp_path: Path) -> None:
    """restic's `backup -vv` lines (new / modified / unchanged, files and directories), and its
    `verbose_status` JSON lines; nothing of them with one -v."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "f").write_text("1")
    (src / "sub" / "g").write_text("22")
    first = sv.ok("backup", "--provider", "none", "-vv", src).splitlines()
    assert {f"new       {src}/f, 1 B", f"new       {src}/sub/g, 2 B", f"new       {src}/sub/"} <= set(first)
    assert (
        first.index(f"new       {src}/sub/g, 2 B")
        < first.index(f"new       {src}/sub/")
        < first.index(f"new       {src}/")
    )  # a directory after what it holds

    (src / "f").write_text("333")
    (src / "h").write_text("4")
    second = set(sv.ok("backup", "--provider", "none", "-vv", src).splitlines())
    assert {
        f"modified  {src}/f, 3 B",
        f"unchanged {src}/sub/g, 2 B",
        f"unchanged {src}/sub/",
        f"new       {src}/h, 1 B",
        f"modified  {src}/",
    } <= second

    lines = [
        json.loads(line) for line in sv.ok("backup", "--provider", "none", "-vv", "--json", src).splitlines()
    ]
    verbose = {line["item"]: line for line in lines if line["message_type"] == "verbose_status"}
    assert verbose[f"{src}/f"] == {
        "message_type": "verbose_status",
        "action": "unchanged",
        "item": f"{src}/f",
        "size": 3,
    }
    assert verbose[f"{src}/sub/"]["action"] == "unchanged" and "size" not in verbose[f"{src}/sub/"]
    assert not [
        line for line in sv.ok("backup", "--provider", "none", "-v", src).splitlines() if str(src) in line
    ]
