"""`exec`: run any program against a shadow set, so tar, restic or borg read a consistent image.

The program gets the shadows in its environment and in its arguments:

    SHADOWVAULT_SET_ID        the set's id
    SHADOWVAULT_SHADOW_ROOT   the first volume's shadow (where `{shadow}` points)
    SHADOWVAULT_SHADOW_<n>    the shadow of the n-th --volume, counted from 0
    SHADOWVAULT_VOLUME_<n>    the n-th volume's live mount point
    {shadow}, {shadow:N}      in an argument: the first / the N-th (from 0) shadow's path

The set is released when the program ends, and its exit status is passed on.

The program is the user's own, run as the user who ran `exec`, so it gets that user's environment
as it is (plus the variables above): a `shadowvault backup` or `restic backup` run through exec
needs its password from there, and the user put it there. The writers of the set, which run the
administrator's code as root, get a clean environment instead (proc.writer_environment).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Sequence

import msgspec

from shadowvault.errors import NotFoundError, PermissionDeniedError, UsageError
from shadowvault.shadow import validity
from shadowvault.shadow.in_place import wrapped as in_place_command
from shadowvault.shadow.manifest import ShadowSetManifest
from shadowvault.shadow.options import DEFAULTS, SetOptions
from shadowvault.shadow.requesting import IN_PROCESS, ShadowSets

log = logging.getLogger(__name__)

COMMAND_NOT_FOUND = 127
COMMAND_NOT_EXECUTABLE = 126
_PLACEHOLDER = re.compile(r"\{shadow(?::(\d+))?\}")


class CommandNotFound(NotFoundError):
    """The program to run does not exist; exec exits 127 like a shell."""

    exit_code = COMMAND_NOT_FOUND


def shadow_environment(manifest: ShadowSetManifest) -> dict[str, str]:
    """The variables a program run by exec finds the shadows in."""
    env = {"SHADOWVAULT_SET_ID": manifest.id}
    if manifest.shadows:
        env["SHADOWVAULT_SHADOW_ROOT"] = manifest.shadows[0].path
    for n, shadow in enumerate(manifest.shadows):
        env[f"SHADOWVAULT_SHADOW_{n}"] = shadow.path
        env[f"SHADOWVAULT_VOLUME_{n}"] = shadow.volume
    return env


def substitute(argv: Sequence[str], manifest: ShadowSetManifest) -> list[str]:
    """Replace `{shadow}` and `{shadow:N}` in every argument by the shadow paths."""

    def replace(match: re.Match[str]) -> str:
        n = int(match.group(1) or 0)
        if n >= len(manifest.shadows):
            count = len(manifest.shadows)
            raise UsageError(f"{match.group(0)}: the set has {count} shadow(s), numbered from 0")
        return manifest.shadows[n].path

    return [_PLACEHOLDER.sub(replace, arg) for arg in argv]


def _check_command(argv: Sequence[str]) -> None:
    program = argv[0]
    if "/" in program:
        found = program if os.path.exists(program) else None
    else:
        from shutil import which

        found = which(program)
    if found is None:
        raise CommandNotFound(f"{program}: command not found")


def run_in_shadow_set(
    argv: Sequence[str],
    volumes: Sequence[str],
    options: SetOptions = DEFAULTS,
    sets: ShadowSets = IN_PROCESS,
    *,
    in_place: bool = False,
) -> tuple[int, ShadowSetManifest]:
    """Create a shadow set (with `sets`: here, or by the daemon), run `argv` against it, release it;
    (exit status, manifest). `in_place`: the command sees each shadow at its volume's own path."""
    if not argv:
        raise UsageError("exec needs a command to run: shadowvault exec --volume MNT -- CMD ARGS...")
    _check_command(argv)  # before anything is frozen: a typo must not cost a shadow set
    if in_place and os.geteuid() != 0:
        raise PermissionDeniedError(
            "--in-place needs root (it makes a mount namespace); use {shadow} instead"
        )
    with sets.shadow_set(volumes, options) as manifest:
        seen = _in_place_view(manifest) if in_place else manifest
        command = substitute(argv, seen)
        if in_place:
            command = in_place_command(command, manifest)
        env = dict(os.environ)
        env.update(shadow_environment(seen))
        log.info("exec: %s", command)
        try:
            # The user's own program, with our stdin/stdout/stderr: not a hook run through proc.run.
            status = subprocess.call(command, env=env)
        except FileNotFoundError:
            raise CommandNotFound(f"{command[0]}: command not found") from None
        except PermissionError:
            return COMMAND_NOT_EXECUTABLE, manifest
        if status < 0:  # killed by a signal: report it the way a shell does
            status = 128 - status
        # What the program read is only the point in time if every shadow still holds it (an LVM
        # snapshot may have overflowed meanwhile): else fail, and writers see no completed backup.
        validity.ensure_valid(manifest)
        if status != 0:
            # The program failed: writers must not treat this as a completed backup (no log truncation).
            raise _ProgramFailed(status, manifest)
    return status, manifest


def _in_place_view(manifest: ShadowSetManifest) -> ShadowSetManifest:
    """The manifest as the command sees it in place: every shadow at its volume's path."""
    shadows = [msgspec.structs.replace(shadow, path=shadow.volume) for shadow in manifest.shadows]
    return msgspec.structs.replace(manifest, shadows=shadows)


class _ProgramFailed(Exception):
    def __init__(self, status: int, manifest: ShadowSetManifest) -> None:
        super().__init__(status)
        self.status = status
        self.manifest = manifest


def exec_in_shadow_set(
    argv: Sequence[str],
    volumes: Sequence[str],
    options: SetOptions = DEFAULTS,
    sets: ShadowSets = IN_PROCESS,
    *,
    in_place: bool = False,
) -> tuple[int, ShadowSetManifest]:
    """Like run_in_shadow_set, but a failing program is a status, not an exception (CLI `exec`)."""
    try:
        return run_in_shadow_set(argv, volumes, options, sets, in_place=in_place)
    except _ProgramFailed as failed:
        return failed.status, failed.manifest
