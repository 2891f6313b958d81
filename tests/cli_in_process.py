"""`shadowvault ARGS...` in the test's process with click's CliRunner (no interpreter start per call),
on one repository named through the environment (the `env` fixture of tests/conftest.py)."""

from __future__ import annotations

from click.testing import CliRunner, Result

from shadowvault.cli.main import cli


class Shadowvault:
    """Calls return click's Result: exit_code, stdout and stderr apart."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: object, input: str | None = None) -> Result:
        argv = [str(a) for a in args]
        return CliRunner().invoke(cli, argv, env=self.env, input=input, catch_exceptions=False)
