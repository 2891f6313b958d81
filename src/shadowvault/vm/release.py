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
import time

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
