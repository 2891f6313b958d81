"""Global -q/--quiet (no progress, no informational lines; what was asked for still prints) and
`shadowvault completion bash|zsh|fish`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from shadowvault.cli import output
from shadowvault.cli.main import cli
from shadowvault.cli.progress import progress
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot
from tests.archive.helpers import PASSWORD, archive
from tests.inprocess_cli import json_out, one_error_line, run


def test_quiet_keeps_requested_output_and_errors_only(env, tmp_path: Path):
    loud = run(env, "init", "--repo", tmp_path / "loud")
    assert loud.exit_code == 0 and loud.stdout.startswith("created repository ")
    quiet = run(env, "--quiet", "init", "--repo", tmp_path / "quiet")
    assert quiet.exit_code == 0, quiet.stderr
    assert quiet.stdout == "" and quiet.stderr == ""

    table = run(env, "snapshots")
    assert table.stdout.strip().endswith("0 snapshots")
    quiet_table = run(env, "-q", "snapshots")
    assert quiet_table.exit_code == 0
    assert quiet_table.stdout == "", quiet_table.stdout  # no snapshots: no header, and no count under -q
    assert json_out(run(env, "-q", "snapshots", "--json")) == []
    assert json_out(run(env, "-q", "key", "list", "--json"))["message_type"] == "key"  # one key, one line
    stats = run(env, "-q", "stats")
    assert stats.exit_code == 0 and "Total size: 0 B" in stats.stdout

    checked = run(env, "-q", "check")
    assert checked.exit_code == 0 and checked.stdout == "" and checked.stderr == ""
    failed = run({**env, "SHADOWVAULT_PASSWORD": "wrong"}, "-q", "snapshots")
    assert "wrong password" in one_error_line(failed)
    usage = run(env, "-q", "snapshots", "--no-such-option")
    assert usage.exit_code == 2 and "no-such-option" in one_error_line(usage)


def test_quiet_check_still_lists_the_errors(env, tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "file").write_bytes(os.urandom(100_000))
    repo_path = Path(env["SHADOWVAULT_REPOSITORY"])
    with Repository.open(repo_path, PASSWORD) as repo:
        root, _ = archive(repo, data)
        repo.save_snapshot(Snapshot(time=1.0e9, host="h", paths=[str(data)], tree=root))
    packs = [p for p in (repo_path / "data").rglob("*") if p.is_file()]
    for pack in packs:
        damaged = bytearray(pack.read_bytes())
        damaged[len(damaged) // 2] ^= 0xFF
        pack.write_bytes(bytes(damaged))
    checked = run(env, "-q", "check", "--read-data")
    assert checked.exit_code == 1
    assert any(line.startswith("error: ") for line in checked.stdout.splitlines()), checked.stdout
    assert "is affected" in checked.stdout and "errors found" in one_error_line(checked)


def test_quiet_silences_progress_in_one_place(capsys: pytest.CaptureFixture[str]):
    def status() -> dict:
        return {"message_type": "status", "done": 1}

    for quiet in (False, True):
        with click.Context(click.Command("any")) as ctx:
            ctx.meta[output.QUIET] = quiet
            with progress(status, str, True, final=True):
                pass
            output.note("a note")
            output.info("an info line")
            output.listing("a listing line")
            output.warn("a warning")
        printed = capsys.readouterr()
        if quiet:
            assert printed.out == "a listing line\n"
            assert printed.err == "shadowvault: warning: a warning\n"
        else:
            assert json.loads(printed.out.splitlines()[0]) == status()
            assert printed.out.splitlines()[1:] == ["an info line", "a listing line"]
            assert printed.err.splitlines() == ["a note", "shadowvault: warning: a warning"]


def test_a_warning_under_json_is_a_json_line(capsys: pytest.CaptureFixture[str]):
    for meta_key in (output.JSON_REQUESTED, output.JSON_GLOBAL):
        with click.Context(click.Command("any")) as ctx:
            ctx.meta[meta_key] = True
            output.warn("caf\udce9: could not be read")  # a name that is not UTF-8
        [line] = capsys.readouterr().err.splitlines()
        assert json.loads(line) == {"message_type": "warning", "message": "caf\udce9: could not be read"}


def _script(shell: str) -> str:
    done = CliRunner().invoke(cli, ["completion", shell], catch_exceptions=False)
    assert done.exit_code == 0, done.stderr
    return done.stdout


def test_completion_scripts_and_bash_completes_commands(tmp_path: Path):
    bash_script = _script("bash")
    assert "complete -o nosort -F _shadowvault_completion shadowvault" in bash_script
    by_variable = CliRunner().invoke(
        cli, [], env={"_SHADOWVAULT_COMPLETE": "bash_source"}, prog_name="shadowvault"
    )
    assert by_variable.stdout == bash_script
    assert "#compdef shadowvault" in _script("zsh")
    assert "complete --no-files --command shadowvault" in _script("fish")
    unknown = CliRunner().invoke(cli, ["completion", "tcsh"])
    assert unknown.exit_code == 2 and "tcsh" in one_error_line(unknown)

    # a `shadowvault` on PATH (as the console script is), which the completion function calls back
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "shadowvault"
    wrapper.write_text(f"#!{sys.executable}\nfrom shadowvault.cli.main import main\nmain()\n")
    wrapper.chmod(0o755)
    (tmp_path / "completion.bash").write_text(bash_script)
    bash = shutil.which("bash")
    assert bash, "bash is needed to test bash completion"
    probe = (
        f"source {tmp_path / 'completion.bash'}\n"
        "declare -F _shadowvault_completion\n"
        "COMP_WORDS=(shadowvault key ''); COMP_CWORD=2\n"
        "_shadowvault_completion shadowvault\n"
        'echo "${COMPREPLY[*]}"\n'
    )
    done = subprocess.run(
        [bash, "--norc", "--noprofile", "-c", probe],
        capture_output=True,
        text=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    defined, completed = done.stdout.splitlines()
    assert defined == "_shadowvault_completion"
    assert completed.split() == ["add", "list", "passwd", "remove"]
