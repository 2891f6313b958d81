"""Under --json every line a command prints, on stdout and on stderr, is one JSON object with a
`message_type` (restic's convention), so a script can read any command's output line by line.

Each repository command runs here on a small repository, succeeding and failing. `snapshots` is
the one exception: its --json is restic's single array, which restic users' scripts read
(docs/archive.md, "Output")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result

from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD
from tests.inprocess_cli import Shadowvault


def json_objects(result: Result, argv: tuple[str, ...]) -> list[dict]:
    """Every line of stdout and stderr, each checked to be an object with a message_type."""
    lines = []
    for stream in (result.stdout, result.stderr):
        for line in stream.splitlines():
            try:
                parsed = json.loads(line)
            except ValueError:
                pytest.fail(f"{argv}: not JSON: {line!r}")
            assert isinstance(parsed, dict) and isinstance(parsed.get("message_type"), str), (argv, line)
            lines.append(parsed)
    return lines


@pytest.fixture
def sv(env: dict[str, str]) -> Shadowvault:
    return Shadowvault({**env, "SHADOWVAULT_FROM_PASSWORD": PASSWORD})  # copy's source is the same


@pytest.fixture
def source(sv: Shadowvault, tmp_path: Path) -> Path:
    """Two snapshots of a small tree (a file changed and one added in between)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "hosts").write_text("127.0.0.1 localhost\n")
    assert sv("backup", "--provider", "none", src).exit_code == 0
    (src / "hosts").write_text("127.0.0.1 localhost web\n")
    (src / "new.txt").write_text("new\n")
    assert sv("backup", "--provider", "none", src).exit_code == 0
    return src


def run_json(sv: Shadowvault, *argv: object, code: int = 0) -> list[dict]:
    args = tuple(str(a) for a in argv)
    done = sv(*args, "--json")
    assert done.exit_code == code, (args, done.stdout, done.stderr)
    lines = json_objects(done, args)
    assert lines, args  # every command says something under --json, if only its summary
    return lines


def test_every_repository_command_prints_json_objects_with_a_message_type(sv, source, tmp_path):
    first, second = (s["id"] for s in json.loads(sv("snapshots", "--json").stdout))  # restic's array
    (tmp_path / "pw2").write_text("second password\n")
    (tmp_path / "pw3").write_text("third password\n")
    Repository.init(tmp_path / "other", PASSWORD, kdf_params=FAST_KDF).close()  # copy's destination
    commands: list[tuple[object, ...]] = [
        ("init", "--repo", tmp_path / "fresh"),
        ("backup", "--provider", "none", source),
        ("backup", "--provider", "none", "--dry-run", source),
        ("ls", "latest"),
        ("diff", first, second),
        ("find", "hosts"),
        ("versions", source / "hosts"),
        ("stats",),
        ("stats", "--mode", "raw-data"),
        ("tag", "latest", "--add", "checked"),
        ("rewrite", "--exclude", "hosts", "--dry-run"),
        ("rewrite", "--exclude", "hosts", "latest"),
        ("restore", "latest", "--target", tmp_path / "restored"),
        ("restore", f"latest:{source}", "--target", tmp_path / "restored", "--dry-run"),
        ("check", "--read-data"),
        ("forget", "--keep-last", "1", "--dry-run"),
        ("copy", "--from-repo", sv.env["SHADOWVAULT_REPOSITORY"], "--repo", tmp_path / "other"),
        ("key", "list"),
        ("key", "add", "--new-password-file", tmp_path / "pw2"),
        ("forget", first),
        ("forget", "--keep-last", "1", "--prune"),
        ("prune",),
        ("repair", "index"),
        ("repair", "packs"),
        ("repair", "snapshots"),
    ]
    seen = {}
    for argv in commands:
        seen[argv] = run_json(sv, *argv)
    assert {line["message_type"] for line in seen["key", "list"]} == {"key"}
    assert [line["message_type"] for line in seen["init", "--repo", tmp_path / "fresh"]] == ["initialized"]

    # key passwd and key remove, opened with the key they keep
    other = Shadowvault({**sv.env, "SHADOWVAULT_PASSWORD": "second password"})
    keys = run_json(other, "key", "list")
    first_key = next(k["id"] for k in keys if not k["current"])
    [removed] = run_json(other, "key", "remove", first_key[:8])
    assert removed == {"message_type": "summary", "removed": f"keys/{first_key}"}
    [changed] = run_json(other, "key", "passwd", "--new-password-file", tmp_path / "pw3")
    assert changed["message_type"] == "summary" and changed["key"].startswith("keys/")


def test_failures_under_json_are_json_lines_too(sv, source, tmp_path):
    third = Shadowvault({**sv.env, "SHADOWVAULT_PASSWORD": "wrong"})
    failures: list[tuple[Shadowvault, tuple[object, ...], int]] = [
        (sv, ("ls", "nosuch"), 2),
        (sv, ("ls", "abcdef12"), 1),
        (sv, ("diff", "latest"), 2),
        (sv, ("forget",), 2),
        (sv, ("key", "remove", "zz"), 2),
        (sv, ("key", "passwd"), 2),
        (sv, ("restore", "latest"), 2),
        (sv, ("stats", "--mode", "weird"), 2),
        (third, ("key", "list"), 1),
    ]
    for runner, argv, code in failures:
        [error] = run_json(runner, *argv, code=code)
        assert error["message_type"] == "exit_error" and error["code"] == code, (argv, error)
