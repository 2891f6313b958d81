"""Options every repository command shares (--repo, --password-file, --password-command) and opening
the repository.

Where the password comes from, first match wins (restic's order, with a command line option always
before an environment variable): --password-command, --password-file, $SHADOWVAULT_PASSWORD_COMMAND,
$SHADOWVAULT_PASSWORD_FILE, $SHADOWVAULT_PASSWORD, a prompt on a terminal. Giving both options is a
usage error. Imported by the repository, maintenance, backup and restore command modules.

As restic's global flags, the three may also come before the command (`shadowvault -r /backup
snapshots`): `root_repo_options` adds them to the root group, which keeps them in the context's
meta; a command's own option, typed after it, wins, and either wins over the environment.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from shadowvault.cli.repo_env import PASSWORD_COMMAND_ENV, PASSWORD_ENV, PASSWORD_FILE_ENV, REPO_ENV
from shadowvault.errors import CommandError, UsageError
from shadowvault.repo.keys import unlock_key
from shadowvault.repo.password_command import first_line_of
from shadowvault.repo.password_file import read_password_file
from shadowvault.repo.storage import backend_for, validate_existing

if TYPE_CHECKING:
    from shadowvault.repo.repository import Repository

F = TypeVar("F", bound=Callable[..., Any])

PASSWORD_COMMAND_TIMEOUT = 300.0  # a command may ask a person (pinentry, a hardware token)

_COMMAND_META = "shadowvault.password_command"  # the context's meta key: (command, given on the command line)
_ROOT_META = (
    "shadowvault.root_repo_options"  # meta: {"repo": ..., "password_file": ...} given before the command
)


def _keep_password_command(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Keep --password-command in the context (commands' signatures stay as they are); one typed
    before the command stays unless the command's own is typed too."""
    if value:
        given = ctx.get_parameter_source(param.name or "") is not click.core.ParameterSource.ENVIRONMENT
        if given or not ctx.meta.get(_COMMAND_META, (None, False))[1]:
            ctx.meta[_COMMAND_META] = (value, given)


def _keep_root_option(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Keep -r/--repo or --password-file typed before the command, for the command's own option."""
    if value:
        ctx.meta.setdefault(_ROOT_META, {})[param.name or ""] = value


def _or_root_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The command's own value when typed after it, else the one typed before it, else `value` (its
    environment variable)."""
    if ctx.get_parameter_source(param.name or "") is click.core.ParameterSource.COMMANDLINE:
        return value
    return ctx.meta.get(_ROOT_META, {}).get(param.name or "", value)


def root_repo_options(func: F) -> F:
    """-r/--repo, --password-file and --password-command before the command (restic's habit)."""
    func = click.option(
        "--password-command",
        default=None,
        metavar="CMD",
        expose_value=False,
        callback=_keep_password_command,
        help="The command's --password-command, given before it.",
    )(func)
    func = click.option(
        "--password-file",
        default=None,
        metavar="FILE",
        expose_value=False,
        callback=_keep_root_option,
        help="The command's --password-file, given before it.",
    )(func)
    return click.option(
        "-r",
        "--repo",
        default=None,
        metavar="PATH",
        expose_value=False,
        callback=_keep_root_option,
        help="The command's --repo, given before it (as restic's -r).",
    )(func)


def repo_options(func: F) -> F:
    """Add --repo, --password-file and --password-command (each also an environment variable)."""
    func = click.option(
        "--password-command",
        envvar=PASSWORD_COMMAND_ENV,
        show_envvar=True,
        default=None,
        metavar="CMD",
        expose_value=False,
        callback=_keep_password_command,
        help="Run CMD (split like a shell would, run without one) and take the first line it prints"
        " as the password.",
    )(func)
    func = click.option(
        "--password-file",
        type=click.Path(dir_okay=False),
        envvar=PASSWORD_FILE_ENV,
        show_envvar=True,
        default=None,
        callback=_or_root_option,
        help=f"Read the password from this file's first line (else ${PASSWORD_ENV}, else a prompt on a"
        " terminal).",
    )(func)
    func = click.option(
        "-r",
        "--repo",
        envvar=REPO_ENV,
        show_envvar=True,
        default=None,
        metavar="PATH",
        callback=_or_root_option,
        help="The repository: a path, file:// or s3: URL.",
    )(func)
    return func


def repo_path(repo: str | None) -> str:
    """The repository's location as given: a path or a `file://` URL (repo/storage.py reads it)."""
    if not repo:
        raise UsageError(f"no repository given: use --repo PATH or set {REPO_ENV}")
    return repo


def run_password_command(command: str) -> str:
    """The first line `command` prints (run without a shell); a UsageError when it fails or prints none."""
    try:
        argv = shlex.split(command)
    except ValueError as err:
        raise UsageError(f"cannot parse the password command {command!r}: {err}") from err
    if not argv:
        raise UsageError("the password command is empty")
    try:
        password = first_line_of(argv, PASSWORD_COMMAND_TIMEOUT)
    except CommandError as err:
        raise UsageError(f"the password command failed: {err}") from err
    if not password:
        raise UsageError(f"the password command {argv[0]} printed no password")
    return password


def given_on_command_line(ctx: click.Context | None, name: str) -> bool:
    """Whether the parameter `name` came from the command line (not its environment variable)."""
    if ctx is None:
        return False
    source = ctx.get_parameter_source(name)
    return source is not None and source is not click.core.ParameterSource.ENVIRONMENT


@dataclass(frozen=True)
class PasswordSources:
    """Where one repository's password may come from, and which came from the command line."""

    command: str | None
    command_given: bool  # on the command line (else from the environment)
    file: str | None
    file_given: bool
    password_env: str  # the variable holding the password itself
    options: tuple[str, str] = ("--password-command", "--password-file")
    label: str = "repository password"


def resolve_password(sources: PasswordSources, *, confirm: bool = False) -> str:
    """The password from the first source in the module docstring's order."""
    command_option, file_option = sources.options
    if sources.command_given and sources.file_given:
        raise UsageError(f"give {command_option} or {file_option}, not both")
    if sources.command_given or (sources.command and not sources.file_given):
        return run_password_command(sources.command or "")
    if sources.file:
        return read_password_file(sources.file, UsageError)
    env = os.environ.get(sources.password_env)
    if env:
        return env
    if sys.stdin.isatty():
        return prompt_password(sources.label, confirm=confirm)
    raise UsageError(
        f"no password given: use {file_option} or {command_option}, set {sources.password_env}, or run"
        " on a terminal"
    )


def read_password(password_file: str | None, *, confirm: bool = False) -> str:
    """The repository's password (--password-command, --password-file and their variables,
    $SHADOWVAULT_PASSWORD, a prompt), in the order of the module's docstring."""
    ctx = click.get_current_context(silent=True)
    command, command_given = ctx.meta.get(_COMMAND_META, (None, False)) if ctx else (None, False)
    sources = PasswordSources(
        command=command,
        command_given=command_given,
        file=password_file,
        file_given=bool(password_file)
        and (given_on_command_line(ctx, "password_file") or "password_file" in _root_given(ctx)),
        password_env=PASSWORD_ENV,
    )
    return resolve_password(sources, confirm=confirm)


def _root_given(ctx: click.Context | None) -> dict[str, str]:
    """The options typed before the command, by parameter name."""
    return dict(ctx.meta.get(_ROOT_META, {})) if ctx else {}


def prompt_password(label: str, *, confirm: bool = False) -> str:
    """A password typed at the terminal; an empty one is refused at once (click would ask forever)."""
    password = click.prompt(label, default="", show_default=False, hide_input=True, err=True)
    if not password:
        raise UsageError("an empty password is not allowed")
    if confirm and click.prompt(
        f"{label} (again)", default="", show_default=False, hide_input=True, err=True
    ) != (password):
        raise UsageError("the two passwords differ")
    return password


def open_repository(
    repo: str | None, password_file: str | None, *, write: bool = False, kind: str = "backup"
) -> Repository:
    """Open the repository named by the options. `write=True` for commands that add data (backup).

    The key is unlocked before the repository's modules are loaded: scrypt's 32 MiB then come on top
    of the interpreter and the command's options alone, not of all a command loads (61 -> 55 MiB at
    the peak of a no-change backup). Where the environment names the repository and password,
    cli/launch.py ran scrypt even before the options were loaded, and unlocking takes its result."""
    backend = backend_for(validate_existing(repo_path(repo)))
    key, key_name = unlock_key(backend, read_password(password_file))
    from shadowvault.repo.repository import Repository

    return Repository.open_unlocked(backend, key, key_name, write=write, kind=kind)
