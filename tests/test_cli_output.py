"""What commands print about names a user does not control: escaped for a terminal, exact in JSON;
failures as one escaped line, or as one JSON line under --json."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from shadowvault.repo.repository import Repository
from tests.archive.helpers import PASSWORD

# raw name -> what a person sees
NAMES = {
    b"new\nline": "new\\nline",
    b"carriage\rreturn": "carriage\\rreturn",
    b"tab\tname": "tab\\tname",
    b"esc\x1b[2Jclear": "esc\\x1b[2Jclear",
    b"bell\x07del\x7f": "bell\\x07del\\x7f",
    "c1\u0085next".encode(): "c1\\xc2\\x85next",
    "bidi\u202etxt.exe".encode(): "bidi\\xe2\\x80\\xaetxt.exe",
    b"latin1-\xe9t\xe9": "latin1-\\xe9t\\xe9",
    "caf\u00e9 \u2603".encode(): "caf\u00e9 \u2603",  # printable UTF-8 is shown as is
}


@pytest.fixture
def named_tree(tmp_path: Path) -> bytes:
    """A directory holding one file per awkward name (content: the name itself)."""
    src = os.fsencode(tmp_path / "src")
    os.mkdir(src)
    for raw in NAMES:
        with open(os.path.join(src, raw), "wb") as f:
            f.write(raw)
    os.symlink(b"target\x1b]0;title\x07", os.path.join(src, b"link"))
    return src


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def only_line(text: str) -> str:
    assert text.count("\n") == 1, repr(text)
    return text.rstrip("\n")


def assert_no_controls(text: str) -> None:
    bad = [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F or c == "\u202e"]
    assert not bad, repr(text)


def test_ls_escapes_names_for_people(cli, env, named_tree):
    assert cli("backup", "--provider", "none", os.fsdecode(named_tree), env=env).returncode == 0
    src = os.fsdecode(named_tree)

    done = cli("ls", "latest", src, env=env)
    assert done.returncode == 0, done.stderr
    assert_no_controls(done.stdout)
    lines = done.stdout.splitlines()
    assert len(lines) == len(NAMES) + 2  # the directory itself, each name, the symlink
    for shown in NAMES.values():
        assert f"{src}/{shown}" in lines

    done = cli("ls", "-l", "latest", src, env=env)
    assert done.returncode == 0, done.stderr
    assert_no_controls(done.stdout)
    assert len(done.stdout.splitlines()) == len(NAMES) + 2
    assert f"{src}/link -> target\\x1b]0;title\\x07" in done.stdout
    long_line = next(line for line in done.stdout.splitlines() if "new\\nline" in line)
    assert f" {len(b'new-line')} " in long_line


def test_ls_json_keeps_names_exact(cli, env, named_tree):
    assert cli("backup", "--provider", "none", os.fsdecode(named_tree), env=env).returncode == 0
    done = cli("ls", "--json", "latest", os.fsdecode(named_tree), env=env)
    assert done.returncode == 0, done.stderr
    nodes = {}
    for entry in json_lines(done.stdout):
        if entry["message_type"] != "node":
            continue
        raw = base64.b64decode(entry["name_bytes"]) if "name_bytes" in entry else entry["name"].encode()
        path = base64.b64decode(entry["path_bytes"]) if "path_bytes" in entry else entry["path"].encode()
        assert path == os.path.join(named_tree, raw) or raw == os.path.basename(named_tree)
        nodes[raw] = entry
    assert set(NAMES) | {b"link"} <= set(nodes)
    for raw in NAMES:
        assert nodes[raw]["size"] == len(raw)
        try:
            assert nodes[raw]["name"] == raw.decode("utf-8") and "name_bytes" not in nodes[raw]
        except UnicodeDecodeError:
            assert nodes[raw]["name"] == raw.decode("utf-8", "backslashreplace")
    assert nodes[b"link"]["link_target"] == "target\x1b]0;title\x07"


def test_diff_escapes_names_for_people_and_keeps_them_in_json(cli, env, named_tree, tmp_path):
    assert cli("backup", "--provider", "none", os.fsdecode(named_tree), env=env).returncode == 0
    (tmp_path / "src" / "added").write_text("new")
    with open(os.path.join(named_tree, b"esc\x1b[2Jclear"), "ab") as f:
        f.write(b"more")
    os.unlink(os.path.join(named_tree, b"latin1-\xe9t\xe9"))
    assert cli("backup", "--provider", "none", os.fsdecode(named_tree), env=env).returncode == 0
    first, second = (snap["id"] for snap in json.loads(cli("snapshots", "--json", env=env).stdout))
    src = os.fsdecode(named_tree)

    done = cli("diff", first, second, env=env)
    assert done.returncode == 0, done.stderr
    assert_no_controls(done.stdout)
    assert f"M    {src}/esc\\x1b[2Jclear" in done.stdout.splitlines()
    assert f"-    {src}/latin1-\\xe9t\\xe9" in done.stdout.splitlines()

    done = cli("diff", "--json", first, second, env=env)
    changes = {}
    for entry in json_lines(done.stdout):
        if entry["message_type"] == "change":
            path = base64.b64decode(entry["path_bytes"]) if "path_bytes" in entry else entry["path"].encode()
            changes[path] = entry["change"]
    assert changes[os.path.join(named_tree, b"esc\x1b[2Jclear")] == "modified"
    assert changes[os.path.join(named_tree, b"latin1-\xe9t\xe9")] == "removed"


def test_diff_prints_its_header_changes_and_counts_on_stdout(cli, env, tmp_path):
    """As restic's: `diff A B > changes.txt` keeps which snapshots were compared and the counts;
    -q keeps the changes alone."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "kept").write_text("same\n")
    assert cli("backup", "--provider", "none", src, env=env).returncode == 0
    (src / "added").write_text("new\n")
    assert cli("backup", "--provider", "none", src, env=env).returncode == 0
    first, second = (snap["id"][:8] for snap in json.loads(cli("snapshots", "--json", env=env).stdout))

    done = cli("diff", first, second, env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"comparing snapshot {first} to {second}:"
    assert f"+    {src}/added" in lines
    assert lines[-6:] == [
        "",
        "files:    1 new, 0 removed, 0 changed",
        "dirs:     0 new, 0 removed",
        "others:   0 new, 0 removed",
        "metadata: 1 changed; unreadable: 0",
        "data:     4 B added, 0 B removed",
    ]

    quiet = cli("-q", "diff", first, second, env=env)
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout.splitlines() == [line for line in lines if line and line[0] in "+-MU!"]


def test_diff_figures_count_entries_by_kind_and_the_data_added_and_removed(cli, env, tmp_path):
    """restic's figures: new, removed and changed entries by kind, and the data only one side holds
    (a file moved elsewhere adds and removes no data)."""
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    (src / "gone").write_bytes(b"g" * 1000)
    (src / "edited").write_bytes(b"e" * 300)
    (src / "dir" / "link").symlink_to("gone")
    (src / "kept").write_bytes(b"k" * 50)
    assert cli("backup", "--provider", "none", src, env=env).returncode == 0
    (src / "gone").unlink()
    (src / "dir" / "link").unlink()
    (src / "edited").write_bytes(b"E" * 700)
    (src / "new").mkdir()
    (src / "new" / "moved").write_bytes(b"g" * 1000)  # gone's data under another name
    (src / "new" / "fresh").write_bytes(b"f" * 20)
    os.mkfifo(src / "new" / "pipe")
    assert cli("backup", "--provider", "none", src, env=env).returncode == 0
    first, second = (snap["id"][:8] for snap in json.loads(cli("snapshots", "--json", env=env).stdout))

    done = cli("diff", first, second, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-5:] == [
        "files:    2 new, 1 removed, 1 changed",
        "dirs:     1 new, 0 removed",
        "others:   1 new, 1 removed",
        "metadata: 2 changed; unreadable: 0",
        "data:     720 B added, 300 B removed",
    ]
    [figures] = [
        m
        for m in json_lines(cli("diff", "--json", first, second, env=env).stdout)
        if m["message_type"] == "statistics"
    ]
    counts = [figures[name] for name in ("added", "removed", "modified", "metadata", "changed_files")]
    assert counts == [4, 2, 1, 2, 1]
    assert figures["added_entries"] == {"files": 2, "dirs": 1, "others": 1, "data_blobs": 2, "bytes": 720}
    assert figures["removed_entries"] == {"files": 1, "dirs": 0, "others": 1, "data_blobs": 1, "bytes": 300}


def test_snapshots_table_shows_paths_and_tags_as_text(cli, env, tmp_path):
    src = tmp_path / "two\nlines"
    src.mkdir()
    refused = cli("backup", "--provider", "none", "--tag", "[red]:smile:\x1b", src, env=env)
    assert refused.returncode == 2 and "is not a tag" in only_line(refused.stderr)  # recorded, it broke lines
    done = cli("backup", "--provider", "none", "--tag", "[/x]", "--tag", "[red]:smile:", src, env=env)
    assert done.returncode == 0, done.stderr
    done = cli("snapshots", env=env)
    assert done.returncode == 0, done.stderr
    assert_no_controls(done.stdout)
    assert f"{tmp_path}/two\\nlines" in done.stdout
    assert "[/x], [red]:smile:" in done.stdout


def test_errors_are_escaped_one_line(cli, env, tmp_path):
    missing = f"{tmp_path}/gone\x1b[2J\nsecond line"
    done = cli("backup", "--provider", "none", missing, env=env)
    assert done.returncode == 1
    line = only_line(done.stderr)
    assert line.startswith("shadowvault: error: ")
    assert "gone\\x1b[2J\\nsecond line" in line

    done = cli("ls", "no\x1bsuch", env=env)
    assert done.returncode != 0
    assert "no\\x1bsuch" in only_line(done.stderr)


def test_json_errors_are_json(cli, env, tmp_path):
    missing = tmp_path / "no-repository"
    done = cli("snapshots", "--json", "--repo", missing, env={"SHADOWVAULT_PASSWORD": PASSWORD})
    assert done.returncode == 1
    error = json.loads(only_line(done.stderr))
    assert error["message_type"] == "exit_error"
    assert error["code"] == 1
    assert str(missing) in error["message"]
    assert done.stdout == ""

    # compact, as README.md and docs/archive.md write it and as every other JSON line is
    message = json.dumps(error["message"])
    assert done.stderr == f'{{"message_type":"exit_error","code":1,"message":{message}}}\n'

    done = cli("ls", "--json", env=env)  # usage: SNAP missing
    assert done.returncode == 2
    error = json.loads(only_line(done.stderr))
    assert error["message_type"] == "exit_error" and error["code"] == 2 and "SNAP" in error["message"]

    done = cli("ls", "--json", "--no-such-option", "latest", env=env)
    assert done.returncode == 2
    assert json.loads(only_line(done.stderr))["code"] == 2

    missing_path = f"{tmp_path}/gone\x1b"
    done = cli("backup", "--json", "--provider", "none", missing_path, env=env)
    assert done.returncode == 1
    assert json.loads(only_line(done.stderr)) == {
        "message_type": "exit_error",
        "code": 1,
        "message": f"{missing_path}: no such file or directory",
    }


def test_a_path_named_json_after_double_dash_is_not_the_option(cli, env):
    done = cli("backup", "--provider", "none", "--", "--json", env=env)
    assert done.returncode == 1
    assert only_line(done.stderr).startswith("shadowvault: error: ")


def test_ls_long_escapes_owner_names_from_a_crafted_snapshot(cli, env):
    """Owner names come from the repository like file names do: a crafted one cannot drive the terminal."""
    from shadowvault.repo.snapshot import Snapshot
    from shadowvault.repo.tree import Node, Tree

    with Repository.open(env["SHADOWVAULT_REPOSITORY"], PASSWORD, write=True) as repo:
        node = Node(name=b"f", type="file", mode=0o644, user="\x1b]0;pwned\x07", group="g\nroup")
        tree = repo.save_tree(Tree(nodes=[node]))
        repo.save_snapshot(Snapshot(time=1.0, host="h", paths=["/"], tree=tree))
    done = cli("ls", "-l", "latest", env=env)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert "\\x1b]0;pwned\\x07/g\\nroup" in done.stdout


def test_json_results_of_maintenance_commands_carry_a_message_type(cli, env, tmp_path):
    """check, prune, forget, stats and repair under --json: each stdout line an object with a
    `message_type`, as backup's and restore's lines are (docs/archive.md, "Output")."""
    src = tmp_path / "data"
    src.mkdir()
    (src / "f").write_text("content\n")
    for _ in range(2):
        assert cli("backup", "--provider", "none", str(src), env=env).returncode == 0
    commands = [
        ("check", "--read-data"),
        ("stats",),
        ("forget", "--keep-last", "1", "--prune"),
        ("prune",),
        ("repair", "index"),
        ("repair", "packs"),
        ("repair", "snapshots"),
    ]
    for argv in commands:
        done = cli(*argv, "--json", env=env)
        assert done.returncode == 0, (argv, done.stderr)
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        assert lines and all(line.get("message_type") == "summary" for line in lines), (argv, done.stdout)
