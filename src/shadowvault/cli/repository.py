"""CLI commands: init, snapshots, key add/list/passwd/remove (parse options, call the library, print)."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

import click

from shadowvault.cli.from_repo_options import from_repo_options, open_source_repository
from shadowvault.cli.output import emit, info, json_option, print_json, print_table
from shadowvault.cli.repo_options import (
    open_repository,
    prompt_password,
    read_password,
    repo_options,
    repo_path,
)
from shadowvault.display import human_size
from shadowvault.errors import UsageError
from shadowvault.repo.password_file import read_password_file
from shadowvault.repo.repository import Repository
from shadowvault.repo.snapshot import Snapshot, summary_bytes


@click.command("init")
@repo_options
@from_repo_options
@click.option(
    "--copy-chunker-params",
    is_flag=True,
    help="Cut files into chunks as --from-repo does, so that snapshots copied from it deduplicate"
    " with this repository's own backups.",
)
@json_option
def init_cmd(
    repo: str | None,
    password_file: str | None,
    from_repo: str | None,
    from_password_file: str | None,
    from_password_command: str | None,
    copy_chunker_params: bool,
    as_json: bool,
) -> None:
    """Create a new, empty repository."""
    path = Repository.validate_new_path(repo_path(repo))
    chunker = None
    if copy_chunker_params:
        with open_source_repository(from_repo, from_password_file, from_password_command) as source:
            chunker = source.config.chunker
    elif from_repo:
        raise UsageError("--from-repo is only read with --copy-chunker-params")
    password = read_password(password_file, confirm=True)
    created = Repository.init(path, password, chunker=chunker)
    created.close()
    where = str(path.resolve()) if isinstance(path, Path) else created.path
    emit(
        as_json,
        {"message_type": "initialized", "repository": where, "id": created.id},  # restic's form
        lambda: info(f"created repository {created.id[:8]} at {where}"),
    )


def format_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def format_size(n: int | None) -> str:
    return "" if n is None else human_size(n)


def snapshot_json(snapshot_id: str, snap: Snapshot) -> dict:
    """A snapshot as `snapshots --json` lists it (restic's fields; `original` only when set, as restic).
    `hostname` is restic's name for `host`, there for the scripts of restic users; `time` is seconds
    since the epoch (restic: RFC 3339 text, here `time_iso`)."""
    original = {"original": snap.original} if snap.original else {}
    return {
        "id": snapshot_id,
        "short_id": snapshot_id[:8],
        "time": snap.time,
        "time_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(snap.time)),
        "host": snap.host,
        "hostname": snap.host,
        "username": snap.username,
        "paths": snap.paths,
        "tags": snap.tags,
        "tree": snap.tree.hex(),
        "parent": snap.parent,
        "manifest": snap.manifest.hex() if snap.manifest else None,
        "components": snap.components,
        "consistency": snap.consistency,
        "size": summary_bytes(snap),
        "summary": snap.summary,
        **original,
    }


@click.group("key")
def key_group() -> None:
    """Manage the passwords that open the repository."""


new_password_file_option = click.option(
    "--new-password-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Read the new password from this file's first line (else a prompt on a terminal).",
)


def _new_password(new_password_file: str | None) -> str:
    if new_password_file:
        return read_password_file(new_password_file, UsageError)
    if not sys.stdin.isatty():
        raise UsageError("give the new password with --new-password-file")
    return prompt_password("new password", confirm=True)


def _short(name: str) -> str:
    return name.rsplit("/", 1)[1][:8]


@key_group.command("add")
@repo_options
@new_password_file_option
@json_option
def key_add_cmd(
    repo: str | None, password_file: str | None, new_password_file: str | None, as_json: bool
) -> None:
    """Add another password (key file) for the repository."""
    with open_repository(repo, password_file) as r:
        name = r.add_key(_new_password(new_password_file))
    emit(as_json, {"message_type": "summary", "key": name}, lambda: info(f"added key {_short(name)}"))


@key_group.command("passwd")
@repo_options
@new_password_file_option
@json_option
def key_passwd_cmd(
    repo: str | None, password_file: str | None, new_password_file: str | None, as_json: bool
) -> None:
    """Change the password of the key that opens the repository (a new key replaces it: the new one
    is written before the old one is removed)."""
    with open_repository(repo, password_file) as r:
        old = r.key_name or ""
        name = r.change_password(_new_password(new_password_file))
    emit(
        as_json,
        {"message_type": "summary", "key": name, "removed": old},
        lambda: info(f"changed the password: key {_short(name)} replaces key {_short(old)}"),
    )


@key_group.command("remove")
@repo_options
@click.argument("key_id")
@json_option
def key_remove_cmd(repo: str | None, password_file: str | None, key_id: str, as_json: bool) -> None:
    """Remove a key (by its id or a unique prefix): never the one in use, never the last one."""
    with open_repository(repo, password_file) as r:
        name = r.remove_key(key_id)
    emit(as_json, {"message_type": "summary", "removed": name}, lambda: info(f"removed key {_short(name)}"))


@key_group.command("list")
@repo_options
@json_option
def key_list_cmd(repo: str | None, password_file: str | None, as_json: bool) -> None:
    """List the key files; * marks the one this command opened the repository with, and a damaged
    one (its content no longer matches its name) says so."""
    with open_repository(repo, password_file) as r:
        keys = sorted(r.list_keys(), key=lambda k: (str(k["created"]), str(k["id"])))
    if as_json:  # a line per key, like every --json line an object with its message_type
        for key in keys:
            print_json({"message_type": "key", **key})
        return
    print_table(
        [" ", "ID", "Created", "Host", "User"],
        [
            (
                "*" if k["current"] else "",
                str(k["id"])[:8] + (" (damaged)" if k["damaged"] else ""),
                _key_time(k["created"]),
                k["host"],
                k["username"],
            )
            for k in keys
        ],
    )


def _key_time(created: object) -> str:
    """A key file's creation time (ISO 8601, UTC) as `snapshots` shows times: local, to the second;
    as it is written when it is not a time (a key file written by another tool)."""
    try:
        return format_time(datetime.fromisoformat(str(created)).timestamp())
    except ValueError:
        return str(created)


COMMANDS: list[click.Command] = [init_cmd, key_group]
