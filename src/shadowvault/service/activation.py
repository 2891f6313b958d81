"""A listening socket handed over by systemd (socket activation, sd_listen_fds(3)).

systemd passes the sockets of a `.socket` unit as descriptors 3, 4, ... and says so in
LISTEN_PID (who they are for) and LISTEN_FDS (how many). The variables are removed once read, so
that the daemon's children (writers' hooks, `exec` programs) never believe they were activated.
"""

from __future__ import annotations

import os
import socket

from shadowvault.errors import ShadowvaultError

FIRST_FD = 3  # SD_LISTEN_FDS_START


def inherited_socket() -> socket.socket | None:
    """The Unix stream socket systemd passed to this process, or None when it passed none."""
    pid = os.environ.pop("LISTEN_PID", None)
    count = os.environ.pop("LISTEN_FDS", None)
    os.environ.pop("LISTEN_FDNAMES", None)
    if pid is None or count is None or not pid.isdigit() or int(pid) != os.getpid():
        return None
    if not count.isdigit() or int(count) < 1:
        return None
    if int(count) > 1:
        raise ShadowvaultError(f"systemd passed {count} sockets; the daemon listens on one (ListenStream=)")
    try:
        sock = socket.socket(fileno=FIRST_FD)
    except OSError as err:
        raise ShadowvaultError(f"the socket systemd passed (fd {FIRST_FD}): {err.strerror}") from err
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ShadowvaultError("the socket systemd passed is not a Unix stream socket (ListenStream=/path)")
    os.set_inheritable(FIRST_FD, False)
    sock.setblocking(False)
    return sock
