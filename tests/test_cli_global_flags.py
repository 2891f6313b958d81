"""-v, -q, --no-daemon and --json go before or after the command, as restic's global flags do.
(--no-daemon after `jobs run` with a daemon answering: tests/service/test_runs.py.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.inprocess_cli import run


def test_quiet_and_json_work_before_and_after_the_command(env, tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_bytes(os.urandom(10_000))
    for args in (("-q", "backup", "--provider", "none", data), ("backup", "--provider", "none", data, "-q")):
        quiet = run(env, *args)
        assert quiet.exit_code == 0, quiet.stderr
        assert (quiet.stdout, quiet.stderr) == ("", "")
    before, after = run(env, "--json", "snapshots"), run(env, "snapshots", "--json")
    assert before.exit_code == after.exit_code == 0, before.stderr + after.stderr
    assert before.stdout == after.stdout
    assert len(json.loads(before.stdout)) == 2
    listed = run(env, "--json", "ls", "latest", str(data))
    assert listed.exit_code == 0, listed.stderr
    assert [json.loads(line)["message_type"] for line in listed.stdout.splitlines()] == [
        "snapshot",
        "node",
        "node",
    ]
    nested = run(env, "--json", "key", "list")
    assert nested.exit_code == 0 and json.loads(nested.stdout)["message_type"] == "key"  # one key, one line


@pytest.mark.parametrize(
    "args", [("--json", "mount", "/x"), ("mount", "/x", "--json"), ("--json", "dump", "a", "b")]
)
def test_json_for_a_command_that_prints_none_is_one_line(env, args):
    refused = run(env, *args)
    assert refused.exit_code == 2
    lines = refused.stderr.splitlines()
    assert len(lines) == 1
    assert (
        json.loads(lines[0])["message"]
        == f"{args[1] if args[0] == '--json' else args[0]} prints no JSON: --json does not apply"
    )


def test_verbose_works_before_and_after_the_command(cli):
    env = {"SHADOWVAULT_NO_DAEMON": "1"}
    for args in (("-vv", "volumes", "list"), ("volumes", "list", "-vv"), ("volumes", "-v", "list", "-v")):
        done = cli(*args, env=env)
        assert done.returncode == 0, done.stderr
        assert "DEBUG shadowvault." in done.stderr, args
    plain = cli("volumes", "list", env=env)
    assert plain.returncode == 0 and "DEBUG" not in plain.stderr
