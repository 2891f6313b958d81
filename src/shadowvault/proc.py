"""The one way external commands are run: logged, bounded by a timeout, failures raised as CommandError."""

from __future__ import annotations

import logging
import os
import pwd
import shlex
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence

from shadowvault.errors import CommandError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WRITER_VARIABLES = ("PATH", "LANG", "LANGUAGE", "TZ")  # and every LC_*


# The requester's secrets: no command Shadowvault runs (writers' tools, servers a restore starts,
# helpers) needs them, and a program run as another user or kept running must never hold them.
REQUESTER_SECRETS = frozenset(
    {
        "SHADOWVAULT_PASSWORD",
        "SHADOWVAULT_PASSWORD_FILE",
        "SHADOWVAULT_FROM_PASSWORD",  # copy's and init's source repository (cli/from_repo_options.py)
        "SHADOWVAULT_FROM_PASSWORD_FILE",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ACCESS_KEY_ID",
    }
)


def without_secrets(env: Mapping[str, str] | None) -> dict[str, str]:
    """`env` (default: this process's environment) without the requester's secrets."""
    source = os.environ if env is None else env
    return {k: v for k, v in source.items() if k not in REQUESTER_SECRETS}


def writer_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a writer's command runs with: PATH, locale, TZ, HOME and `extra`, nothing else.

    Writers are administrators' programs run as root during someone else's backup; they must not
    inherit the requester's secrets (SHADOWVAULT_PASSWORD, the password file's name, cloud keys,
    tokens). So this is an allow list: whatever is not named here is not passed.
    """
    env = {k: v for k, v in os.environ.items() if k in WRITER_VARIABLES or k.startswith("LC_")}
    env.setdefault("PATH", DEFAULT_PATH)
    try:
        env["HOME"] = pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        env["HOME"] = "/"
    env.update(extra or {})
    return env


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
            list(argv),
            input=input,
            capture_output=True,
            timeout=timeout,
            env=without_secrets(env),
            cwd=cwd,
            check=False,
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


def run_group(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
    executable: str | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run `argv` in its own session and kill its whole process group on timeout.

    For hook commands (writer freeze/thaw scripts) whose children must not outlive a timeout:
    `subprocess.run` kills only the direct child and then waits for pipes a grandchild may hold.
    `on_start` receives the process so a caller can kill it early (abort). `executable` and
    `pass_fds` run a checked program through its descriptor (shadow/writers/trusted_exec.py).
    Never raises on a non-zero status; raises CommandError when the command is missing or times out.
    """
    cmdline = shlex.join(argv)
    log.debug("run (own group): %s", cmdline)
    try:
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=without_secrets(env),
            cwd=cwd,
            start_new_session=True,
            executable=executable,
            pass_fds=tuple(pass_fds),
        )
    except FileNotFoundError as err:
        raise CommandError(f"{argv[0]}: command not found") from err
    except PermissionError as err:
        raise CommandError(f"{argv[0]}: permission denied") from err
    if on_start is not None:
        on_start(child)
    try:
        out, err_out = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as err:
        kill_group(child)
        child.communicate()
        raise CommandError(f"{cmdline}: timed out after {timeout:g} s") from err
    return subprocess.CompletedProcess(list(argv), child.returncode, out, err_out)


def kill_group(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group led by `child` (started by run_group); harmless when it is gone."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
