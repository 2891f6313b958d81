"""The options naming a second, source repository (restic 0.14+'s): --from-repo, --from-password-file,
--from-password-command and their SHADOWVAULT_FROM_* variables; `copy` reads snapshots from it and
`init --copy-chunker-params` its chunker parameters.

The source's password comes from the same order of sources as the repository's own (see
repo_options.py): --from-password-command, --from-password-file, $SHADOWVAULT_FROM_PASSWORD_COMMAND,
$SHADOWVAULT_FROM_PASSWORD_FILE, $SHADOWVAULT_FROM_PASSWORD, a prompt on a terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from shadowvault.cli.repo_options import PasswordSources, given_on_command_line, resolve_password
from shadowvault.errors import UsageError, WrongPasswordError
from shadowvault.repo.backend_s3_url import redacted
from shadowvault.repo.repository import Repository

F = TypeVar("F", bound=Callable[..., Any])

FROM_REPO_ENV = "SHADOWVAULT_FROM_REPOSITORY"
FROM_PASSWORD_ENV = "SHADOWVAULT_FROM_PASSWORD"
FROM_PASSWORD_FILE_ENV = "SHADOWVAULT_FROM_PASSWORD_FILE"
FROM_PASSWORD_COMMAND_ENV = "SHADOWVAULT_FROM_PASSWORD_COMMAND"


def from_repo_options(func: F) -> F:
    """Add --from-repo, --from-password-file and --from-password-command (each also a variable)."""
    func = click.option(
        "--from-password-command",
        envvar=FROM_PASSWORD_COMMAND_ENV,
        show_envvar=True,
        metavar="CMD",
        default=None,
        help="The source's password: the first line CMD prints (split like a shell would, run without one).",
    )(func)
    func = click.option(
        "--from-password-file",
        type=click.Path(dir_okay=False),
        envvar=FROM_PASSWORD_FILE_ENV,
        show_envvar=True,
        default=None,
        help=f"The source's password: this file's first line (else ${FROM_PASSWORD_ENV}, else a prompt).",
    )(func)
    func = click.option(
        "--from-repo",
        envvar=FROM_REPO_ENV,
        show_envvar=True,
        metavar="PATH",
        default=None,
        help="The source repository: a path, file:// or s3: URL.",
    )(func)
    return func


def open_source_repository(
    from_repo: str | None, from_password_file: str | None, from_password_command: str | None
) -> Repository:
    """Open the source repository (read-only) the options name."""
    if not from_repo:
        raise UsageError(f"no source repository: use --from-repo PATH or set {FROM_REPO_ENV}")
    ctx = click.get_current_context(silent=True)
    sources = PasswordSources(
        command=from_password_command,
        command_given=bool(from_password_command) and given_on_command_line(ctx, "from_password_command"),
        file=from_password_file,
        file_given=bool(from_password_file) and given_on_command_line(ctx, "from_password_file"),
        password_env=FROM_PASSWORD_ENV,
        options=("--from-password-command", "--from-password-file"),
        label="source repository password",
    )
    location = Repository.validate_path(from_repo)
    try:
        return Repository.open(location, resolve_password(sources))
    except WrongPasswordError as err:  # the destination's password may be what is wrong, said alike
        raise WrongPasswordError(f"source repository {redacted(from_repo)}: {err}") from err
