"""Which coordinator the commands ask for shadow sets: the daemon when it answers, else this process.

`shadows ...`, `exec` and `backup` call `shadow_sets()`. With a daemon listening on the API socket
(`$SHADOWVAULT_SOCKET`, default /run/shadowvault/api.sock) the daemon makes the sets, so a CLI run
and other requesters share one coordinator; without one, or with `--no-daemon`
(`SHADOWVAULT_NO_DAEMON=1`), this process does, under the same machine locks.
"""

from __future__ import annotations

import click

from shadowvault.shadow.requesting import IN_PROCESS, ShadowSets

NO_DAEMON = "no_daemon"


def shadow_sets() -> ShadowSets:
    """The ShadowSets for the running command (its daemon connection closes with the command)."""
    ctx = click.get_current_context()
    root = ctx.find_root()
    if root.params.get(NO_DAEMON):
        return IN_PROCESS
    from shadowvault.client import Client  # only a command that makes sets pays for it
    from shadowvault.daemon_sets import ThroughDaemon

    client = Client()
    if not client.answers():
        return IN_PROCESS
    root.call_on_close(client.close)
    return ThroughDaemon(client)
