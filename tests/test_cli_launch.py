"""The console script runs scrypt before the command line is parsed when the environment alone
names the repository and its password (cli/launch.py): the command then opens the repository with
that result and no second scrypt. Anything on the command line naming the repository or a
password, a password command, a URL, or a key the password does not open leaves opening to the
usual path, with its usual errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shadowvault.cli import launch
from shadowvault.repo import kdf
from tests.archive.helpers import PASSWORD
from tests.inprocess_cli import json_out, run


@pytest.fixture
def scrypt_calls(monkeypatch) -> list[tuple]:
    """Every scrypt run from now on (each still runs)."""
    calls: list[tuple] = []
    real = kdf.scrypt

    def counted(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(kdf, "scrypt", counted)
    return calls


def test_a_plain_invocation_opens_the_repository_with_the_scrypt_run_ahead(env, scrypt_calls):
    assert launch.derive_ahead(["-q", "snapshots", "--json"], env)
    assert len(scrypt_calls) == 1
    assert json_out(run(env, "snapshots", "--json")) == []
    assert len(scrypt_calls) == 1, "the command ran scrypt again"
    assert json_out(run(env, "snapshots", "--json")) == []
    assert len(scrypt_calls) == 2, "a result run ahead is used once"


def test_a_password_file_in_the_environment_is_read_ahead(env, tmp_path: Path, scrypt_calls):
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    env = {**env, "SHADOWVAULT_PASSWORD": "", "SHADOWVAULT_PASSWORD_FILE": str(tmp_path / "pw")}
    assert launch.derive_ahead(["check"], env)
    assert run(env, "check").exit_code == 0
    assert len(scrypt_calls) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["snapshots", "--repo", "/elsewhere"],
        ["snapshots", "-r", "/elsewhere"],
        ["backup", "--password-file", "/pw", "/data"],
        ["backup", "--help"],
        ["--version"],
        ["init"],
        ["volumes"],
        ["--bogus", "snapshots"],
        [],
    ],
)
def test_nothing_is_run_ahead_unless_the_environment_alone_names_repository_and_password(env, argv):
    assert not launch.derive_ahead(argv, env)


def test_nothing_is_run_ahead_for_a_password_command_a_url_or_no_password(env, scrypt_calls):
    assert not launch.derive_ahead(["snapshots"], {**env, "SHADOWVAULT_PASSWORD_COMMAND": "echo x"})
    assert not launch.derive_ahead(
        ["snapshots"], {**env, "SHADOWVAULT_REPOSITORY": "s3:http://127.0.0.1:1/b"}
    )
    assert not launch.derive_ahead(["snapshots"], {**env, "SHADOWVAULT_PASSWORD": ""})
    assert not launch.derive_ahead(["snapshots"], {**env, "SHADOWVAULT_REPOSITORY": "/no/such/repository"})
    assert scrypt_calls == []


@pytest.mark.parametrize(
    "crafted",
    [
        b'{"kdf": "scrypt", "n": 1099511627776, "r": 8, "p": 1, "salt": "AAAA", "data": "AAAA"}',
        b'{"kdf": "scrypt", "n": 3, "r": 8, "p": 1, "salt": "AAAA", "data": "AAAA"}',
        b'{"kdf": "argon2", "n": 1024, "r": 8, "p": 1, "salt": "AAAA", "data": "AAAA"}',
        b'{"kdf": "scrypt", "n": "many", "r": 8, "p": 1, "salt": "AAAA", "data": "AAAA"}',
        b'{"kdf": "scrypt", "n": 1024, "r": 8, "p": 1, "salt": "not base64!", "data": "AAAA"}',
        b'{"kdf": "scrypt"}',
        b"[1, 2, 3]",
        b"\xff" * 70_000,
    ],
)
def test_a_crafted_key_file_is_left_to_the_usual_path(env, crafted: bytes):
    """The key file is repository input: scrypt parameters beyond the memory bound, out of range or
    of the wrong type, a bad salt, another shape or a huge file make nothing run ahead and raise
    nothing here; opening the repository reports it as before."""
    [key_file] = (Path(env["SHADOWVAULT_REPOSITORY"]) / "keys").iterdir()
    key_file.write_bytes(crafted)
    assert not launch.derive_ahead(["snapshots"], env)
    opened = _console_script(env, "snapshots")
    assert opened.returncode != 0 and "Traceback" not in opened.stderr, opened.stderr
    assert opened.stderr.splitlines()[-1].startswith("shadowvault: error: "), opened.stderr


def _console_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`shadowvault ARGS` through the console script's entry point, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "shadowvault.cli.launch", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_a_wrong_password_or_a_damaged_key_is_reported_as_it_was_without_running_ahead(env):
    wrong = _console_script({**env, "SHADOWVAULT_PASSWORD": "not it"}, "snapshots")
    assert wrong.returncode == 1, wrong.stderr
    assert wrong.stderr.startswith("shadowvault: error: wrong password"), wrong.stderr

    [key_file] = (Path(env["SHADOWVAULT_REPOSITORY"]) / "keys").iterdir()
    key_file.write_bytes(b"not a key file")
    damaged = _console_script(env, "snapshots")
    assert damaged.returncode != 0 and "Traceback" not in damaged.stderr
    assert "damaged" in damaged.stderr, damaged.stderr
