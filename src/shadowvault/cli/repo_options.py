"""Options every repository command shares (--repo, --password-file) and opening the repository.

Imported by the repository, maintenance, backup and restore command modules.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from shadowvault.errors import UsageError
from shadowvault.repo.password_file import read_password_file
from shadowvault.repo.repository import Repository

F = TypeVar("F", bound=Callable[..., Any])

REPO_ENV = "SHADOWVAULT_REPOSITORY"
PASSWORD_ENV = "SHADOWVAULT_PASSWORD"
PASSWORD_FILE_ENV = "SHADOWVAULT_PASSWORD_FILE"


def repo_options(func: F) -> F:
    """Add --repo (or $SHADOWVAULT_REPOSITORY) and --password-file (or $SHADOWVAULT_PASSWORD_FILE)."""
    func = click.option(
        "--password-file",
        type=click.Path(dir_okay=False),
        envvar=PASSWORD_FILE_ENV,
        default=None,
        help=f"Read the password from this file (else ${PASSWORD_ENV}, else a prompt on a terminal).",
    )(func)
    func = click.option(
        "-r",
        "--repo",
        envvar=REPO_ENV,
        default=None,
        metavar="PATH",
        help=f"The repository (default ${REPO_ENV}).",
    )(func)
    return func


def repo_path(repo: str | None) -> str:
    """The repository's location as given: a path or a `file://` URL (repo/storage.py reads it)."""
    if not repo:
        raise UsageError(f"no repository given: use --repo PATH or set {REPO_ENV}")
    return repo


def read_password(password_file: str | None, *, confirm: bool = False) -> str:
    """The password from --password-file, $SHADOWVAULT_PASSWORD, or a prompt when on a terminal."""
    if password_file:
        return read_password_file(password_file, UsageError)
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return env
    if sys.stdin.isatty():
        return prompt_password("repository password", confirm=confirm)
    raise UsageError(f"no password given: use --password-file, set {PASSWORD_ENV}, or run on a terminal")


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
    """Open the repository named by the options. `write=True` for commands that add data (backup)."""
    path = Repository.validate_path(repo_path(repo))
    return Repository.open(path, read_password(password_file), write=write, kind=kind)
