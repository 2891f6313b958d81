"""The fanotify provider's side of its listener process: started, awaited until ready, known, stopped.

The listener (fanotify_listener.py) runs in a session of its own, so it outlives the requester's
signals, and says `ready` (with its report) or `error` in JSON lines on a status pipe. A pid alone
may be reused, so a listener is known by its pid and its start time: the record beside its view
holds both, and a later process (the next requester, the daemon, the orphan reaper) stops exactly
that one. While the commit waits, the provider keeps its own descriptor of the volume: a listener
that fails or is cancelled is killed, and the volume thawed in case it had frozen it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from shadowvault.errors import ProviderError
from shadowvault.proc import pid_alive
from shadowvault.shadow.manifest import Shadow
from shadowvault.shadow.providers.fanotify_freeze import thaw
from shadowvault.shadow.volumes import Volume

log = logging.getLogger(__name__)

READY_TIMEOUT = 600.0  # the coordinator's commit limit (and cancel) comes first
STOP_TIMEOUT = 10.0
LISTENER_MODULE = "shadowvault.shadow.providers.fanotify_listener"


def _process_stat(pid: int) -> tuple[str, str] | None:
    """The state and start time (fields 3 and 22 of its stat) of `pid`, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (fields[0], fields[19]) if len(fields) >= 20 else None


def process_start(pid: int) -> str | None:
    """The start time of `pid`: with the pid, it names one live process.

    None for a process that has ended, a zombie included (a listener killed while its creator runs).
    """
    stat = _process_stat(pid)
    return None if stat is None or stat[0] in ("Z", "X") else stat[1]


def _reap(pid: int, start: str) -> None:
    """Wait for the listener `pid` started at `start` if it ended as a child of this process (the
    daemon's, killed behind its back), so that no zombie of it stays for as long as the daemon runs."""
    if _process_stat(pid) == ("Z", start):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def start_listener(volume: Volume, shadow: Shadow, cancelled: threading.Event) -> dict[str, Any]:
    """Start the listener of `shadow` (its view, store and log in provider_data) and return its
    `ready` report; ProviderError when it reports an error, ends, or the commit is `cancelled`."""
    data = shadow.provider_data
    read_end, write_end = os.pipe()
    argv = [
        sys.executable,
        "-m",
        LISTENER_MODULE,
        "--volume",
        volume.mount_point,
        "--view",
        data["view"],
        "--store",
        data["store"],
        "--status-fd",
        str(write_end),
        "--log",
        data["log"],
    ]
    try:
        with open(data["log"], "ab") as log_file:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                pass_fds=(write_end,),
                start_new_session=True,  # not in the requester's process group: it outlives its signals
            )
    finally:
        os.close(write_end)
    # Our own descriptor of the volume: if the listener dies or is cancelled, we thaw it.
    volume_fd = os.open(volume.mount_point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    statuses: list[dict] = []
    try:
        _write_record(data["record"], volume, child.pid)
        _await_status(read_end, child, statuses, cancelled)
    except BaseException:
        _end_listener(child, volume_fd)
        raise
    finally:
        os.close(read_end)
    ready = next((s["ready"] for s in statuses if "ready" in s), None)
    if ready is None:
        _end_listener(child, volume_fd)
        error = next((s["error"] for s in statuses if "error" in s), None)
        ended = f"the listener ended (exit status {child.poll()}); see {data['log']}"
        raise ProviderError(f"fanotify shadow of {volume.mount_point} failed: {error or ended}")
    os.close(volume_fd)
    data["listener_pid"] = child.pid
    data["listener_start"] = process_start(child.pid)
    return ready


def _end_listener(child: subprocess.Popen[bytes], volume_fd: int) -> None:
    """Kill a listener that failed or was cancelled, then thaw the volume in case it had frozen it.

    Always: it may have been killed between its FIFREEZE and saying so. A failed commit aborts
    the set, so thawing a freeze the set's fsfreeze writer holds is only its abort done early.
    """
    with contextlib.suppress(ProcessLookupError):
        child.kill()
    child.wait()
    try:
        thaw(volume_fd)
    except OSError as err:
        log.error("cannot thaw %s after its fanotify listener ended: %s", volume_fd, err)


def _write_record(record: str, volume: Volume, pid: int) -> None:
    with open(record, "w") as f:
        json.dump({"volume": volume.mount_point, "pid": pid, "start": process_start(pid)}, f)


def _await_status(
    fd: int, child: subprocess.Popen[bytes], statuses: list[dict], cancelled: threading.Event
) -> None:
    """Collect the listener's status lines until `ready` or `error`, or until it ends."""
    deadline = time.monotonic() + READY_TIMEOUT
    pending = b""
    while time.monotonic() < deadline:
        if cancelled.is_set():
            raise ProviderError("the fanotify commit was cancelled")
        ready, _, _ = select.select([fd], [], [], 0.05)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            try:
                statuses.append(json.loads(line))
            except ValueError:
                continue
            if "ready" in statuses[-1] or "error" in statuses[-1]:
                return
    raise ProviderError(f"the fanotify listener did not get ready within {READY_TIMEOUT:g} s")


def stop_listener(record: str) -> None:
    """SIGTERM the listener `record` names (it unmounts the view and removes its mark), SIGKILL it
    past STOP_TIMEOUT; nothing when it has ended already (or its pid is another process's now)."""
    try:
        with open(record) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return
    pid, start = info.get("pid"), info.get("start")
    if not isinstance(pid, int) or not isinstance(start, str):
        return
    if not pid_alive(pid) or process_start(pid) != start:
        _reap(pid, start)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # our own child when this process made the shadow
        if process_start(pid) != start:
            return
        time.sleep(0.02)
    log.warning("fanotify listener %d did not stop on SIGTERM; killing it", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def listener_alive(shadow: Shadow) -> bool:
    """Whether the listener keeping `shadow` true still runs (its view fails every access otherwise)."""
    pid = shadow.provider_data.get("listener_pid")
    start = shadow.provider_data.get("listener_start")
    return isinstance(pid, int) and process_start(pid) == start
