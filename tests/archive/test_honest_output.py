"""What the commands say is what happened (issue 16, "Honest output"): kept files, read errors, one
message per event, figures that add up. Each test checks what a user reads: stdout, stderr, exit code."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tests.archive.test_backup_errors import without_dac_override


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
    # counts in the singular when one, the size as backup and snapshots print it (not "0.0 MiB")
    summary_line = r"restored snapshot [0-9a-f]{8}: 1 file, 1 dir, 0 others, 20 B in [0-9.]+s \("
    assert re.search(summary_line, said), said
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

    # a target that cannot be made is one line (they were "internal error: NotADirectoryError ...")
    for unusable, why in (
        (target / "a" / "x", "Not a directory"),
        (tmp_path / ("n" * 300), "File name too long"),
    ):
        done = cli("restore", f"latest:{src}", "--target", str(unusable), env=env)
        assert done.returncode == 2
        assert done.stderr.splitlines() == [f"shadowvault: error: cannot restore into {unusable}: {why}"]


NAMES = ("unlistable", "sealed", "fine")


def test_read_errors_are_in_the_snapshot_and_ls_diff_restore_show_them(cli, env, tmp_path):
    src = tmp_path / "src"
    (src / "unlistable").mkdir(parents=True)
    (src / "unlistable" / "inside").write_text("read by the first backup only")
    (src / "sealed").write_text("x" * 5000)
    (src / "fine").write_text("fine\n")
    assert cli("backup", "--provider", "none", str(src), env=env).returncode == 0
    os.chmod(src / "unlistable", 0o300)
    os.chmod(src / "sealed", 0o000)
    done = without_dac_override(["backup", "--provider", "none", str(src)], env)
    assert done.returncode == 3, done.stderr

    listed = cli("ls", "--json", "latest", str(src), env=env)
    nodes = {m["path"]: m for m in all_json(listed.stdout) if m["message_type"] == "node"}
    assert nodes[f"{src}/sealed"]["size"] == 0  # nothing of it is stored
    assert "Permission denied" in nodes[f"{src}/sealed"]["error"]
    long = cli("ls", "-l", "latest", str(src), env=env)
    assert long.returncode == 0, long.stderr
    lines = {
        path: line
        for line in long.stdout.splitlines()
        for path in [f"{src}/{n}" for n in NAMES]
        if f"{path} " in line or line.endswith(path)
    }
    assert "not read at backup: Permission denied" in lines[f"{src}/sealed"]
    assert "not read at backup" in lines[f"{src}/unlistable"]
    assert "not read" not in lines[f"{src}/fine"]
    plain = cli("ls", "latest", str(src), env=env)
    assert f"{src}/sealed" in plain.stdout.splitlines()  # names alone on stdout, the marks on stderr
    assert f"{src}/sealed: not read at backup: Permission denied" in plain.stderr

    snaps = json.loads(cli("snapshots", "--json", env=env).stdout)
    first, second = snaps[0]["id"], snaps[1]["id"]
    diff = cli("diff", "--json", first, second, env=env)
    assert diff.returncode == 0, diff.stderr
    changes = {
        m["path"]: m for m in of_type(all_json(diff.stdout), "change") if m["path"].startswith(f"{src}/")
    }
    assert set(changes) == {f"{src}/unlistable", f"{src}/sealed"}  # "inside" was not seen, not removed
    assert changes[f"{src}/sealed"]["change"] == "unreadable"
    assert "Permission denied" in changes[f"{src}/unlistable"]["error"]
    text = cli("diff", first, second, env=env).stdout.splitlines()
    assert any(
        line.startswith("!") and f"{src}/sealed" in line and "Permission denied" in line for line in text
    )

    target = tmp_path / "restored"
    done = cli("restore", f"latest:{src}", "--target", str(target), env=env)
    assert done.returncode == 0, done.stderr
    assert "unlistable: restored empty" in done.stderr and "sealed: not restored" in done.stderr


def test_every_file_error_is_said_once_and_json_output_is_all_json(cli, env, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "sealed").write_text("no permission")
    (src / "fine").write_text("fine\n")
    os.chmod(src / "sealed", 0o000)

    done = without_dac_override(["backup", "--provider", "none", str(src)], env)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count(f"{src}/sealed") == 1, done.stderr

    os.chmod(src / "sealed", 0o644)
    done = without_dac_override(["backup", "--json", "--provider", "none", str(src)], env)
    assert done.returncode == 0, done.stderr
    os.chmod(src / "sealed", 0o000)
    done = without_dac_override(["backup", "--json", "--provider", "none", str(src)], env)
    assert done.returncode == 3
    errors = of_type(all_json(done.stderr), "error")
    assert [e["path"] for e in errors] == [f"{src}/sealed"]
    assert of_type(all_json(done.stdout), "summary")

    target = tmp_path / "target"
    (target / str(src).lstrip("/") / "fine").mkdir(parents=True)  # a directory in the way of a file
    done = cli("restore", "latest", "--target", str(target), "--overwrite", "always", env=env)
    assert done.returncode == 3
    assert done.stderr.count(f"{src}/fine") == 1, done.stderr
    done = cli("restore", "--json", "latest", "--target", str(target), "--overwrite", "always", env=env)
    assert done.returncode == 3
    assert [e["path"] for e in of_type(all_json(done.stderr), "error")] == [f"{src}/fine"]
    assert of_type(all_json(done.stdout), "summary")

    # a log line (a damaged snapshot file is skipped with a warning) is JSON too under --json
    (Path(env["SHADOWVAULT_REPOSITORY"]) / "snapshots" / ("ab" * 32)).write_bytes(b"not a snapshot")
    done = cli("snapshots", "--json", env=env)
    assert done.returncode == 0, done.stderr
    (logged,) = of_type(all_json(done.stderr), "log")
    assert logged["level"] == "warning" and "abababab" in logged["message"]
    plain = cli("snapshots", env=env)
    assert len([line for line in plain.stderr.splitlines() if "abababab" in line]) == 1
    assert not plain.stderr.startswith("{")
