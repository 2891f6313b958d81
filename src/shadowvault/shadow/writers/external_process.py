"""The process of an external writer: started on demand, one request line out and one reply line in.

The executable runs as root in its own session, through the descriptor that was checked
(trusted_exec.py), with a clean environment (proc.writer_environment). One request is in flight at a
time; a reply that does not come within the event's timeout, a closed stream or an overlong line
marks the stream broken, and the next request starts a fresh process. Its stderr is logged, and its
last line is quoted when it exits. What the lines mean is external_protocol.py's; which events are
sent, external.py's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import threading
import time
import weakref
from collections import deque
from pathlib import Path

from shadowvault import cancellation, child_limits, proc
from shadowvault.errors import JobCancelledError, WriterError
from shadowvault.shadow.writers import config as writer_config
from shadowvault.shadow.writers.external_protocol import MAX_LINE

log = logging.getLogger(__name__)

TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the writer's process group, SIGKILL it past the grace period, reap it."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=TERM_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


class WriterProcess:
    """One external writer's running executable and its line stream."""

    def __init__(self, label: str, command: list[str], environment: dict[str, str], source: Path) -> None:
        self.label = label
        self.command = command
        self.environment = environment  # besides the clean base environment every writer gets
        self.source = source  # where the command was declared, for the errors of its checks
        self.broken = False  # a request failed midway: the stream can no longer be trusted
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._buffer = b""
        self._stderr: deque[str] = deque(maxlen=20)
        self._busy = threading.Lock()  # one request in flight at a time

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    @property
    def answering(self) -> bool:
        """Running, with a stream still in step: a request can be sent to it."""
        return self._process is not None and self._process.poll() is None and not self.broken

    def exchange(self, event: str, request: bytes, timeout: float, *, blocking: bool = True) -> bytes:
        """Send one request line, return the reply line; WriterError when it fails, times out or dies.

        Not `blocking`: fail at once if another request is in flight (abort must not wait for it).
        """
        if not self._busy.acquire(blocking=blocking):
            raise WriterError(f"the writer is still busy with another event; cannot send {event}")
        try:
            process = self._start()
            assert process.stdin is not None
            self._nothing_unasked(process, event)
            try:
                process.stdin.write(request)
                process.stdin.flush()
            except (BrokenPipeError, OSError) as err:
                self.broken = True
                raise WriterError(self._exited(process, f"before {event}")) from err
            return self._read_line(process, event, timeout)
        finally:
            self._busy.release()

    def stop(self) -> None:
        """Close stdin (a well-behaved writer exits), then SIGTERM/SIGKILL what remains."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=TERM_GRACE)
        except subprocess.TimeoutExpired:
            terminate(process)
        if self._finalizer is not None:
            self._finalizer.detach()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def kill(self) -> None:
        """SIGTERM it now (SIGKILL past the grace period): it must release its application then."""
        process, self._process = self._process, None
        if process is not None:
            terminate(process)
            if self._finalizer is not None:
                self._finalizer.detach()

    def _start(self) -> subprocess.Popen[bytes]:
        if self.answering:
            assert self._process is not None
            return self._process
        self.stop()
        env = proc.writer_environment(self.environment)
        # Checked again (the files may have changed since they were loaded), and started through the
        # descriptor that was checked: swapping the file after this check changes nothing.
        checked = writer_config.open_command(self.command, self.source, "command", search_path=env["PATH"])
        with checked as program:
            try:
                process = subprocess.Popen(
                    self.command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd="/",
                    env=env,
                    start_new_session=True,
                    preexec_fn=child_limits.preexec(),
                    **program.popen_kwargs(),
                )
            except OSError as err:
                raise WriterError(f"cannot start {self.command[0]}: {err.strerror or err}") from err
        self._process, self._buffer, self.broken = process, b"", False
        self._stderr.clear()
        self._finalizer = weakref.finalize(self, terminate, process)
        threading.Thread(
            target=self._drain_stderr, args=(process,), daemon=True, name=f"stderr:{self.label}"
        ).start()
        log.debug("external writer %s started as pid %d", self.label, process.pid)
        return process

    def _drain_stderr(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._stderr.append(line)
                log.info("writer %s: %s", self.label, line)

    def _exited(self, process: subprocess.Popen[bytes], when: str) -> str:
        """`the writer process exited with status 3 during freeze (stderr: its last line)`."""
        try:
            code = process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return f"the writer process closed its output {when}"
        status = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        time.sleep(0.05)  # let the stderr thread catch the last words
        last = f" (stderr: {self._stderr[-1]})" if self._stderr else ""
        return f"the writer process {status} {when}{last}"

    def _nothing_unasked(self, process: subprocess.Popen[bytes], event: str) -> None:
        """Fail when the writer wrote more than its last reply: requests and replies strictly
        alternate, and an extra line would be taken as the answer to `event` (every later reply one
        event late, a failure answered as "ok")."""
        assert process.stdout is not None
        fd = process.stdout.fileno()
        while len(self._buffer) <= MAX_LINE and select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break  # it exited: the request or its reply says so
            self._buffer += chunk
        extra = self._buffer.partition(b"\n")[0].strip()
        if extra:
            self.broken = True
            shown = extra[:80].decode(errors="replace")
            raise WriterError(
                f"wrote a line nobody asked for before {event} (one reply per request): {shown!r}"
            )

    def _read_line(self, process: subprocess.Popen[bytes], event: str, timeout: float) -> bytes:
        """The writer's answer; a cancel of the run leaves it unanswered (and the writer to abort)."""
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        fd = process.stdout.fileno()
        cancelled = cancellation.current()
        while b"\n" not in self._buffer:
            if cancelled is not None and cancelled.cancelled:
                self.broken = True  # its answer would come later: abort terminates it
                raise JobCancelledError(cancelled.reason)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.broken = True
                raise WriterError(f"no answer to {event} within {timeout:g} s")
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self.broken = True
                raise WriterError(self._exited(process, f"during {event}"))
            self._buffer += chunk
            if len(self._buffer) > MAX_LINE:
                self.broken = True
                raise WriterError(f"answer to {event} is longer than {MAX_LINE} bytes")
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line
