"""What the watchdog runs when a requester dies while a guest is frozen: thaw it, clean our QEMU objects.

    python -m shadowvault.vm.release --agent AGENT_SOCKET [--qmp QMP_SOCKET --owner TAG
                                     --keep-bitmap NAME ...]

Quiet and best effort (the watchdog has nowhere to report to): thaw through the guest agent, then
cancel the `sv-` copy jobs, detach their targets and drop the bitmaps a backup into the repository
TAG (vm/bitmaps.py) had just added: all of that repository's but the bases it keeps.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterable

from shadowvault.errors import ShadowvaultError
from shadowvault.vm.agent import GuestAgent
from shadowvault.vm.copy_jobs import clean_leftovers
from shadowvault.vm.qmp import QmpClient


def thaw_guest(agent_socket: str, deadline: float) -> bool:
    """Thaw until the agent says `thawed`: a freeze the dead requester asked for may still be under way
    in the guest (its hooks run first), and the agent answers nothing until it is done."""
    while True:
        with contextlib.suppress(ShadowvaultError), GuestAgent(agent_socket, timeout=10) as agent:
            agent.execute("guest-fsfreeze-thaw", timeout=30)
            if agent.execute("guest-fsfreeze-status") == "thawed":
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1)


def release(
    agent_socket: str | None, qmp_socket: str | None, owner: str, keep_bitmaps: set[str], wait: float = 120
) -> None:
    if agent_socket:
        thaw_guest(agent_socket, time.monotonic() + wait)
    if qmp_socket:
        with contextlib.suppress(ShadowvaultError), QmpClient(qmp_socket, timeout=10) as qmp:
            clean_leftovers(qmp, owner, keep_bitmaps)


def release_argv(
    agent_socket: str, qmp_socket: str | None = None, owner: str = "", keep: Iterable[str] = ()
) -> list[str]:
    """The command line that runs `release` (what the watchdog runs if the requester dies)."""
    argv = [sys.executable, "-m", "shadowvault.vm.release", "--agent", agent_socket]
    if qmp_socket:
        argv += ["--qmp", qmp_socket, "--owner", owner]
    for bitmap in sorted(keep):
        argv += ["--keep-bitmap", bitmap]
    return argv


def thaw_later(agent_socket: str) -> None:
    """Make sure a guest whose freeze did not answer in time ends up thawed, without waiting here:
    the agent answers nothing until the guest's freeze hooks end, and then says `frozen`. The thaw
    runs detached, so it outlives this process if need be."""
    child = subprocess.Popen(
        release_argv(agent_socket),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    threading.Thread(target=child.wait, name="sv-qemu-thaw-later", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="shadowvault.vm.release")
    parser.add_argument("--agent")
    parser.add_argument("--qmp")
    parser.add_argument("--owner", default="")
    parser.add_argument("--keep-bitmap", action="append", default=[])
    args = parser.parse_args(argv)
    release(args.agent, args.qmp, args.owner, set(args.keep_bitmap))


if __name__ == "__main__":
    main()
