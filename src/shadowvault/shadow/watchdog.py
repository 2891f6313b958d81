"""The watchdog: a separate process that guarantees the thaw if the coordinator cannot.

Started before the first freeze, in its own session (killing the coordinator's process group does
not kill it). It gets the writers' WatchdogActions and a deadline on stdin as one JSON line, opens
its own descriptor of every filesystem to thaw *before* anything is frozen, takes a pidfd of the
coordinator, says "ready", and waits. When the coordinator dies (pidfd readable, or EOF on stdin)
or the deadline passes, it performs the actions: FITHAW, thaw commands, signals. It says "fired"
(if anyone still listens) and exits. When told "thawed" it exits quietly. It never logs and never
writes a file: any path it could write might be on a frozen filesystem.

This module imports only the standard library so the process starts fast (and, to run a thaw
command, trusted_exec, which is standard library too); the coordinator side is `Watchdog.start`.
The process gets a writer's clean environment (proc.writer_environment), never the requester's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shadowvault.shadow.freeze_ioctl import FITHAW

if TYPE_CHECKING:  # the watchdog process itself imports only the standard library
    from shadowvault.shadow.watchdog_actions import WatchdogAction

READY, FIRED, THAWED, FIRE = "ready", "fired", "thawed", "fire"
START_TIMEOUT = 15.0


# ---- the watchdog process ---------------------------------------------------------------------


def _thaw(fd: int) -> None:
    # EINVAL: not frozen (already thawed). Any other error: nothing better to do here, and
    # nowhere safe to report it; the coordinator's own abort reports thaw failures.
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, FITHAW, 0)


def _run(argv: list[str], timeout: float, env: dict[str, str]) -> None:
    """Run a writer's thaw command as the writer itself would: its checked program, by descriptor.

    Our own environment is already a writer's (Watchdog.start), so it is passed on. A program that
    fails the check now is not run: it is not the one the administrator declared any more.
    """
    from shadowvault.errors import ShadowvaultError
    from shadowvault.shadow.writers import trusted_exec

    full_env = dict(os.environ)
    full_env.update(env)
    try:
        program = trusted_exec.open_program(argv[0], "a thaw command", search_path=full_env.get("PATH"))
    except (OSError, ShadowvaultError):
        return
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            env=full_env,
            start_new_session=True,
            **program.popen_kwargs(),
        )
    except OSError:
        return
    finally:
        program.close()
    try:
        child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _perform(actions: list[dict[str, Any]], fds: dict[str, int]) -> None:
    # Filesystems first: a thaw command may need to write to them.
    for action in actions:
        if action["kind"] == "thaw_fs" and action["path"] in fds:
            _thaw(fds[action["path"]])
    for action in actions:
        if action["kind"] == "run":
            _run(action["argv"], float(action.get("timeout", 30.0)), action.get("env") or {})
        elif action["kind"] == "signal":
            with contextlib.suppress(OSError):
                os.kill(int(action["pid"]), int(action.get("signal", signal.SIGTERM)))


def _say(message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(1, (message + "\n").encode())


def serve() -> int:
    """The watchdog process's main loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    header = stdin.readline()
    if not header:
        return 0
    order = json.loads(header)
    actions: list[dict[str, Any]] = order["actions"]
    fds = {}
    for action in actions:
        if action["kind"] == "thaw_fs" and action["path"] not in fds:
            with contextlib.suppress(OSError):
                fds[action["path"]] = os.open(action["path"], os.O_RDONLY | os.O_DIRECTORY)
    try:
        pidfd = os.pidfd_open(int(order["pid"]))
    except ProcessLookupError:  # the coordinator is already gone
        _perform(actions, fds)
        return 0
    _say(READY)
    deadline = float(order["deadline"])
    stdin_fd = stdin.fileno()
    pending = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _perform(actions, fds)
            _say(FIRED)
            return 0
        readable, _, _ = select.select([stdin_fd, pidfd], [], [], remaining)
        if pidfd in readable:  # the coordinator died
            _perform(actions, fds)
            return 0
        if stdin_fd in readable:
            chunk = os.read(stdin_fd, 4096)
            if not chunk:  # EOF: the coordinator died or dropped us without a word
                _perform(actions, fds)
                return 0
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                command = line.decode(errors="replace").strip()
                if command == THAWED:
                    return 0
                if command == FIRE:
                    _perform(actions, fds)
                    _say(FIRED)
                    return 0


# ---- the coordinator's side ---------------------------------------------------------------------


class WatchdogStartError(Exception):
    """The watchdog process did not come up; nothing may be frozen without it."""


class Watchdog:
    """The coordinator's handle on a running watchdog process."""

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        self.child = child
        self._fired = False
        self._closed = False

    @classmethod
    def start(
        cls, actions: Sequence[WatchdogAction | dict[str, Any]], deadline: float, *, pid: int | None = None
    ) -> Watchdog:
        """Start a watchdog for `actions` (WatchdogAction structs or dicts) firing at monotonic `deadline`."""
        import msgspec  # the coordinator side may use the project's dependencies

        from shadowvault.proc import writer_environment

        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        # A writer's environment, not ours: the thaw commands it runs inherit it, and nothing of the
        # requester's secrets may reach them (or sit in this long-lived process).
        pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        env = writer_environment({"PYTHONPATH": pythonpath, "PYTHONDONTWRITEBYTECODE": "1"})
        child = subprocess.Popen(
            [sys.executable, "-m", "shadowvault.shadow.watchdog"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd="/",
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        order = {
            "pid": pid if pid is not None else os.getpid(),
            "deadline": deadline,
            "actions": [a if isinstance(a, dict) else msgspec.to_builtins(a) for a in actions],
        }
        watchdog = cls(child)
        try:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(json.dumps(order).encode() + b"\n")
            child.stdin.flush()
            ready, _, _ = select.select([child.stdout], [], [], START_TIMEOUT)
            line = child.stdout.readline().decode().strip() if ready else ""
        except OSError as err:
            watchdog.kill()
            raise WatchdogStartError(f"the watchdog process failed to start: {err}") from err
        if line != READY:
            watchdog.kill()
            raise WatchdogStartError("the watchdog process failed to start (no answer)")
        return watchdog

    def fired(self) -> bool:
        """Whether the watchdog performed its actions (the deadline passed): check without blocking."""
        if self._fired:
            return True
        stdout = self.child.stdout
        if stdout is None or self._closed:
            return False
        ready, _, _ = select.select([stdout], [], [], 0)
        if ready:
            line = stdout.readline().decode(errors="replace").strip()
            self._fired = line == FIRED or (line == "" and self.child.poll() is not None)
        return self._fired

    def _send(self, command: str) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError, ValueError):
            assert self.child.stdin is not None
            self.child.stdin.write(command.encode() + b"\n")
            self.child.stdin.close()

    def thawed(self) -> None:
        """Everything is released: the watchdog exits without doing anything."""
        self.fired()
        self._send(THAWED)
        self._reap()

    def fire(self) -> None:
        """Ask the watchdog to perform its actions now (our own thaw failed) and wait for it."""
        self._send(FIRE)
        self._reap(timeout=None)

    def _reap(self, timeout: float | None = 10.0) -> None:
        try:
            self.child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.child.stdout is not None:
            self.child.stdout.close()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.child.kill()
        self.child.wait()


if __name__ == "__main__":
    sys.exit(serve())
