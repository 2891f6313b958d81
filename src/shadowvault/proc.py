"""The one way external commands are run: logged, bounded by a timeout, failures raised as CommandError."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Mapping, Sequence

from shadowvault.errors import CommandError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0


def run(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run `argv`, capture its output, and raise CommandError (with its stderr) when it fails."""
    cmdline = shlex.join(argv)
    log.debug("run: %s", cmdline)
    try:
        done = subprocess.run(
            list(argv), input=input, capture_output=True, timeout=timeout, env=env, cwd=cwd, check=False
        )
    except FileNotFoundError as err:
        raise CommandError(f"{argv[0]}: command not found (is its package installed?)") from err
    except subprocess.TimeoutExpired as err:
        raise CommandError(f"{cmdline}: timed out after {timeout:g} s") from err
    if check and done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        reason = detail[-1] if detail else f"exit status {done.returncode}"
        raise CommandError(f"{argv[0]} failed: {reason}")
    return done


def output(argv: Sequence[str], **kwargs) -> str:
    """Run `argv` and return its stdout as text."""
    return run(argv, **kwargs).stdout.decode(errors="replace")
