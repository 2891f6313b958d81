"""A repository password printed by a command (restic's --password-command): its first line, read
with a bound. The whole output was captured before: a command that prints without end (`yes`,
`cat /dev/zero`, a helper stuck in a loop) filled the memory until the timeout."""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Sequence

from shadowvault import child_limits, proc
from shadowvault.errors import CommandError
from shadowvault.repo.password_file import MAX_LINE, first_line, password_text

MAX_OUTPUT = MAX_LINE + 1  # bytes read from stdout at most: more is not a password
STDERR_KEPT = 4096  # bytes of stderr kept, the last ones: what a failure says


def first_line_of(argv: Sequence[str], timeout: float) -> str:
    """The first line `argv` prints (run without a shell, stdin and the terminal left to it: it may
    ask a person); CommandError when it cannot start, fails, times out, or prints more than
    MAX_LINE bytes."""
    try:
        child = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=proc.without_secrets(None),
            preexec_fn=child_limits.preexec(),
        )
    except FileNotFoundError as err:
        raise CommandError(f"{argv[0]}: command not found") from err
    except OSError as err:
        raise CommandError(f"{argv[0]}: {err.strerror or err}") from err
    deadline = time.monotonic() + timeout
    try:
        out, err_tail = _bounded_output(child, deadline, argv[0])
        child.wait(max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired as err:  # its output closed, the command itself still runs
        raise CommandError(f"{argv[0]} timed out") from err
    finally:
        if child.poll() is None:  # over the bound, past the timeout, or interrupted
            child.kill()
            child.wait()
    if child.returncode != 0:
        said = err_tail.decode(errors="replace").strip().splitlines()
        raise CommandError(f"{argv[0]} failed: {said[-1] if said else f'exit status {child.returncode}'}")
    return password_text(first_line(out))


def _bounded_output(child: subprocess.Popen[bytes], deadline: float, name: str) -> tuple[bytes, bytes]:
    """stdout (at most MAX_OUTPUT bytes) and the tail of stderr, read until both close."""
    assert child.stdout is not None and child.stderr is not None
    out, err_tail = bytearray(), bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ, out)
        selector.register(child.stderr, selectors.EVENT_READ, err_tail)
        while selector.get_map():
            left = deadline - time.monotonic()
            ready = selector.select(max(left, 0)) if left > 0 else []
            if not ready:
                raise CommandError(f"{name} timed out")
            for key, _ in ready:
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if key.data is err_tail:
                    del err_tail[:-STDERR_KEPT]
                elif len(out) > MAX_OUTPUT:
                    raise CommandError(
                        f"{name} printed more than {MAX_LINE // 1024} KiB: a password is one line"
                    )
    return bytes(out), bytes(err_tail)
