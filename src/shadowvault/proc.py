"""The one way external commands are run: logged, bounded by a timeout, failures raised as CommandError.

Every command starts with the descriptor limit this process started with (child_limits.py), and
in a run that can be cancelled (the daemon's) a cancel stops it: SIGTERM, SIGKILL after a grace
period, and JobCancelledError for the caller to unwind (it removes what the command had written).
A command started once the run is already cancelled is its cleanup, and runs to its end.
"""

from __future__ import annotations

import logging
import os
import pwd
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

from shadowvault import cancellation, child_limits
from shadowvault.errors import CommandError, JobCancelledError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0
POLL = 0.2  # seconds between looks at a cancellable run while its command runs
TERM_GRACE = 5.0  # seconds a cancelled command has to end after SIGTERM, before SIGKILL
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
    """Run `argv`, capture its output, and raise CommandError (with its stderr) when it fails.

    In a run that can be cancelled (cancellation.py) the command gets a process group of its own,
    and a cancel terminates that group (stop()) and raises JobCancelledError.
    """
    cmdline = shlex.join(argv)
    log.debug("run: %s", cmdline)
    watch = cancellation.pending()
    try:
        child = subprocess.Popen(
            list(argv),
            stdin=None if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=without_secrets(env),
            cwd=cwd,
            start_new_session=watch is not None,  # a cancel stops its children too
            preexec_fn=child_limits.preexec(),
        )
    except FileNotFoundError as err:
        raise CommandError(f"{argv[0]}: command not found (is its package installed?)") from err
    try:
        out, err_out = _communicate(child, timeout, input, watch, group=watch is not None)
    except subprocess.TimeoutExpired as err:
        if watch is not None:
            kill_group(child)  # its children too: they may hold its output open
        else:
            child.kill()
        child.communicate()
        raise CommandError(f"{cmdline}: timed out after {timeout:g} s") from err
    except BaseException:  # interrupted (Ctrl-C): the command does not outlive its caller
        child.kill()
        child.wait()
        raise
    if check and child.returncode != 0:
        detail = err_out.decode(errors="replace").strip().splitlines()
        reason = detail[-1] if detail else f"exit status {child.returncode}"
        raise CommandError(f"{argv[0]} failed: {reason}")
    return subprocess.CompletedProcess(list(argv), child.returncode, out, err_out)


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
    Never raises on a non-zero status; raises CommandError when the command is missing or times out,
    JobCancelledError when its run is cancelled meanwhile (the group stopped).
    """
    cmdline = shlex.join(argv)
    log.debug("run (own group): %s", cmdline)
    watch = cancellation.pending()
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
            preexec_fn=child_limits.preexec(),
        )
    except FileNotFoundError as err:
        raise CommandError(f"{argv[0]}: command not found") from err
    except PermissionError as err:
        raise CommandError(f"{argv[0]}: permission denied") from err
    if on_start is not None:
        on_start(child)
    try:
        out, err_out = _communicate(child, timeout, None, watch, group=True)
    except subprocess.TimeoutExpired as err:
        kill_group(child)
        child.communicate()
        raise CommandError(f"{cmdline}: timed out after {timeout:g} s") from err
    return subprocess.CompletedProcess(list(argv), child.returncode, out, err_out)


def _communicate(
    child: subprocess.Popen[bytes],
    timeout: float,
    input: bytes | None,
    watch: cancellation.Cancellation | None,
    *,
    group: bool,
) -> tuple[bytes, bytes]:
    """`child`'s output once it has ended. TimeoutExpired past `timeout` (the child still runs);
    JobCancelledError, the child stopped, when `watch` is cancelled meanwhile (looked at every POLL)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            return child.communicate(input, timeout=max(min(left, POLL) if watch else left, 0))
        except subprocess.TimeoutExpired:
            if watch is not None and watch.cancelled:
                stop(child, group=group)
                raise JobCancelledError(watch.reason) from None
            if time.monotonic() >= deadline:
                raise
        input = None  # written once; communicate() goes on where it was


def stop(child: subprocess.Popen[bytes], *, group: bool) -> None:
    """SIGTERM `child` (its whole process group when `group`), SIGKILL it past TERM_GRACE, reap it."""
    for sig, grace in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, None)):
        try:
            if group:
                os.killpg(child.pid, sig)
            else:
                child.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            child.communicate(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


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
