"""Running the `shadowvault` command in this process (click's CliRunner): as a user would type it,
without a Python start-up per call. Environment variables are set for the call only."""

from __future__ import annotations

import json

from click.testing import CliRunner, Result

from shadowvault.cli.main import cli


def run(env: dict[str, str], *args: object, input: str | None = None) -> Result:
    """`shadowvault ARGS...` with `env` added to the environment; exit code, stdout and stderr apart."""
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, input=input, catch_exceptions=False)


class Shadowvault:
    """`run` bound to one environment (one repository named in it, as the `env` fixture gives)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: object, input: str | None = None) -> Result:
        return run(self.env, *args, input=input)

    def ok(self, *args: object) -> str:
        """The stdout of a call that must succeed."""
        done = self(*args)
        assert done.exit_code == 0, (args, done.stderr)
        return done.stdout


def json_out(result: Result) -> object:
    """The one JSON document a --json command printed (after checking that it succeeded), past the
    status lines a run longer than a second prints before it (a slow machine's)."""
    assert result.exit_code == 0, result.stderr
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        (document,) = [line for line in lines if not _is_status(line)]
        return document


def _is_status(line: object) -> bool:
    return isinstance(line, dict) and line.get("message_type") == "status"


def one_error_line(result: Result) -> str:
    """The single `shadowvault: error:` line a failing command prints, never a traceback."""
    assert result.exit_code != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("shadowvault: error: "), result.stderr
    return lines[0]
