"""What the commands say is what happened (issue 16, "Honest output"): kept files, read errors, one
message per event, figures that add up. Each test checks what a user reads: stdout, stderr, exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shadowvault.repo.repository import Repository
from tests.archive.helpers import FAST_KDF, PASSWORD


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    repo = tmp_path / "repo"
    Repository.init(repo, PASSWORD, kdf_params=FAST_KDF).close()
    return {
        "SHADOWVAULT_REPOSITORY": str(repo),
        "SHADOWVAULT_PASSWORD": PASSWORD,
        "SHADOWVAULT_NO_DAEMON": "1",
    }


def all_json(text: str) -> list[dict]:
    """Every line of a --json output, each of which must be a JSON object with a message_type."""
    messages = []
    for line in text.splitlines():
        message = json.loads(line)  # fails the test on a line that is not JSON
        assert isinstance(message, dict) and "message_type" in message, line
        messages.append(message)
    return messages


def of_type(messages: list[dict], kind: str) -> list[dict]:
    return [m for m in messages if m["message_type"] == kind]


def test_restore_into_a_non_empty_target_says_what_was_kept(cli, env, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_text("a from the snapshot\n")
    (src / "sub" / "b").write_text("b from the snapshot\n")
    (src / "sub" / "c").write_text("c from the snapshot\n")
    assert cli("backup", "--provider", "none", str(src), env=env).returncode == 0

    target = tmp_path / "target"
    done = cli("restore", f"latest:{src}", "--target", str(target), env=env)
    assert done.returncode == 0, done.stderr
    (target / "a").write_text("the user's edit\n")
    (target / "sub" / "c").unlink()  # gone from the target: restored again

    done = cli("restore", f"latest:{src}", "--target", str(target), env=env)
    assert done.returncode == 0, done.stderr
    assert (target / "a").read_text() == "the user's edit\n"
    assert (target / "sub" / "c").read_text() == "c from the snapshot\n"
    said = done.stdout + done.stderr
    assert "1 files" in said
    assert "2 kept" in said and "already in the target" in said and "--overwrite" in said

    done = cli("restore", "--json", f"latest:{src}", "--target", str(target), env=env)
    assert done.returncode == 0, done.stderr
    out = all_json(done.stdout)
    kept = {m["path"]: m["reason"] for m in of_type(out, "kept")}
    assert set(kept) == {f"{src}/a", f"{src}/sub/b", f"{src}/sub/c"}
    assert all("already in the target" in why for why in kept.values())
    (summary,) = of_type(out, "summary")
    assert summary["files"] == 0 and summary["kept"] == 3

    done = cli("restore", f"latest:{src}", "--target", str(target), "--overwrite", "always", env=env)
    assert done.returncode == 0, done.stderr
    assert (target / "a").read_text() == "a from the snapshot\n"
    assert "kept" not in done.stdout + done.stderr
