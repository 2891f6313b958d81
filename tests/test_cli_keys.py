"""`key list` marks the key in use; `key passwd` replaces it; `key remove` never removes the key in
use or the last key; the password comes from --password-command / --password-file / the environment
in the documented order."""

from __future__ import annotations

import json
import socket
from datetime import datetime
from pathlib import Path

from tests.archive.helpers import PASSWORD
from tests.inprocess_cli import json_out, one_error_line, run


def _keys(env: dict[str, str]) -> list[dict]:
    """`key list --json`: one `key` line per key."""
    listed = run(env, "key", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    keys = [json.loads(line) for line in listed.stdout.splitlines()]
    assert keys and all(key.pop("message_type") == "key" for key in keys)
    return keys


def test_list_marks_the_current_key_passwd_replaces_it_and_remove_refuses(env, tmp_path: Path):
    (tmp_path / "second").write_text("second password\n")
    (tmp_path / "third").write_text("third password\n")
    [first] = _keys(env)
    assert first["current"] is True
    assert first["host"] == socket.gethostname() and first["username"] and first["created"]

    last = run(env, "key", "remove", first["id"][:8])
    assert "last key" in one_error_line(last)

    added = run(env, "key", "add", "--new-password-file", tmp_path / "second")
    assert added.exit_code == 0, added.stderr
    table = run(env, "key", "list")
    assert table.exit_code == 0, table.stderr
    rows = [line.split() for line in table.stdout.splitlines()[1:]]
    assert [row for row in rows if row[0] == "*"] == [["*", first["id"][:8], *table_fields(first)]]
    assert len(rows) == 2

    in_use = run(env, "key", "remove", first["id"])
    assert "opened the repository with" in one_error_line(in_use)

    # opened with the second password, the second key is the current one and the first can go
    second_env = {**env, "SHADOWVAULT_PASSWORD": "", "SHADOWVAULT_PASSWORD_FILE": str(tmp_path / "second")}
    current = [k for k in _keys(second_env) if k["current"]]
    assert len(current) == 1 and current[0]["id"] != first["id"]
    removed = run(second_env, "key", "remove", first["id"][:12])
    assert removed.exit_code == 0, removed.stderr
    assert "wrong password" in one_error_line(run(env, "snapshots"))

    changed = json_out(run(second_env, "key", "passwd", "--new-password-file", tmp_path / "third", "--json"))
    assert changed["message_type"] == "summary" and changed["removed"] == f"keys/{current[0]['id']}"
    assert "wrong password" in one_error_line(run(second_env, "snapshots"))
    third_env = {**second_env, "SHADOWVAULT_PASSWORD_FILE": str(tmp_path / "third")}
    [only] = _keys(third_env)
    assert only["current"] and f"keys/{only['id']}" == changed["key"]

    assert "no key with id" in one_error_line(run(third_env, "key", "remove", "abcdef12"))
    assert "not a key id" in one_error_line(run(third_env, "key", "remove", "zz"))
    no_new = run(third_env, "key", "passwd")
    assert "--new-password-file" in one_error_line(no_new)


def table_fields(key: dict) -> list[str]:
    """The table's time is local, to the second, as `snapshots` prints times (JSON keeps ISO UTC)."""
    created = datetime.fromisoformat(key["created"]).astimezone()
    return [created.strftime("%Y-%m-%d"), created.strftime("%H:%M:%S"), key["host"], key["username"]]


def test_password_command_and_its_precedence(env, tmp_path: Path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    right = tmp_path / "right"
    right.write_text(f"{PASSWORD}\nsecond line is ignored\n")
    no_password = {**env, "SHADOWVAULT_PASSWORD": ""}

    by_command = run(no_password, "--quiet", "snapshots", "--password-command", f"cat '{right}'")
    assert by_command.exit_code == 0, by_command.stderr
    by_env = run({**no_password, "SHADOWVAULT_PASSWORD_COMMAND": f"cat {right}"}, "snapshots")
    assert by_env.exit_code == 0, by_env.stderr

    # the command line beats the environment; a command beats a file; a file beats $SHADOWVAULT_PASSWORD
    command_line_first = {**env, "SHADOWVAULT_PASSWORD_COMMAND": f"cat {wrong}"}
    assert run(command_line_first, "snapshots", "--password-file", right).exit_code == 0
    command_before_file = {**env, "SHADOWVAULT_PASSWORD_COMMAND": f"cat {right}"}
    command_before_file["SHADOWVAULT_PASSWORD_FILE"] = str(wrong)
    assert run(command_before_file, "snapshots").exit_code == 0
    assert "wrong password" in one_error_line(
        run({**env, "SHADOWVAULT_PASSWORD_FILE": str(wrong)}, "snapshots")
    )

    both = run(env, "snapshots", "--password-file", right, "--password-command", f"cat {right}")
    assert both.exit_code == 2 and "not both" in one_error_line(both)
    failing = run(no_password, "snapshots", "--password-command", "sh -c 'echo no >&2; exit 3'")
    assert "the password command failed" in one_error_line(failing)
    empty = run(no_password, "snapshots", "--password-command", "true")
    assert "printed no password" in one_error_line(empty)
    missing = run(no_password, "snapshots", "--password-command", "/nonexistent/pass-helper")
    assert "command not found" in one_error_line(missing)
    unparsable = run(no_password, "snapshots", "--password-command", "cat 'unclosed")
    assert "cannot parse the password command" in one_error_line(unparsable)

    # a first line that runs on is not read whole (/dev/zero as the file filled the memory)
    runaway = tmp_path / "runaway"
    runaway.write_text("x" * 70_000)
    for args in (("snapshots", "--password-file", runaway), ("key", "add", "--new-password-file", runaway)):
        refused = run(env, *args)
        assert refused.exit_code == 2 and "its first line is longer than 64 KiB" in one_error_line(refused)
    # nor is a command's output that runs on (it was captured whole until the 5-minute timeout)
    endless = run(no_password, "snapshots", "--password-command", "yes")
    assert endless.exit_code == 2 and "printed more than 64 KiB" in one_error_line(endless)


def test_help_names_the_password_variables(env):
    shown = run({}, "snapshots", "--help")
    assert shown.exit_code == 0
    text = " ".join(shown.stdout.split())
    for variable in ("SHADOWVAULT_PASSWORD_FILE", "SHADOWVAULT_PASSWORD_COMMAND", "SHADOWVAULT_REPOSITORY"):
        assert f"env var: {variable}" in text


def test_check_gives_advice_that_works_for_a_damaged_key_and_names_what_is_not_a_key(env, tmp_path: Path):
    """A damaged key file in a subdirectory (`keys/sub/abc`) got the advice `key remove abc`, and a
    damaged key sharing its first 8 digits with a good one got an ambiguous prefix. Key files are
    keys/<64 hex digits>: a damaged one is named whole (the advice runs), anything else under keys/
    is no key (no command reads it) and check says to delete it."""
    (tmp_path / "second").write_text("second password\n")
    assert run(env, "key", "add", "--new-password-file", tmp_path / "second").exit_code == 0
    keys = Path(env["SHADOWVAULT_REPOSITORY"]) / "keys"
    [first] = [k["id"] for k in _keys(env) if k["current"]]
    [second] = [k["id"] for k in _keys(env) if not k["current"]]
    damaged = keys / (second[:8] + "0" * 56)  # a name no content of it hashes to
    damaged.write_bytes((keys / second).read_bytes())
    (keys / "sub").mkdir()
    (keys / "sub" / "abc").write_text("junk")
    (keys / "sub" / first).write_bytes((keys / first).read_bytes())  # a copy, out of place
    checked = run(env, "check", "--json")
    assert checked.exit_code == 1
    report = json.loads(checked.stdout)
    [error] = [e for e in report["errors"] if "key file" in e]
    assert f"`shadowvault key remove {damaged.name}`" in error
    strays = [w for w in report["warnings"] if "is not a key file" in w]
    assert sorted(strays) == sorted(
        f"keys/sub/{name} is not a key file (key files are keys/<64 hex digits>): no command reads it or"
        f" can remove it; delete it from {keys.parent} yourself"
        for name in ("abc", first)
    )
    assert sorted(k["id"] for k in _keys(env)) == sorted([first, second, damaged.name])
    assert run(env, "key", "remove", damaged.name).exit_code == 0
    assert run(env, "check").exit_code == 0
