"""A requester process for the tests: creates a shadow set through shadowvault.client, prints its
manifest as one JSON line, then waits for stdin to close (or to be killed) while it holds the set.

    python -m tests.service.requester SOCKET VOLUME [--persistent] [--exit]
"""

from __future__ import annotations

import json
import sys

from shadowvault.client import Client
from shadowvault.errors import ShadowvaultError


def main() -> int:
    socket_path, volume, *flags = sys.argv[1:]
    client = Client(socket_path)
    try:
        manifest = client.create_shadow_set([volume], persistent="--persistent" in flags)
    except ShadowvaultError as err:
        print(json.dumps({"error": str(err), "kind": type(err).__name__}), flush=True)
        return 3
    print(json.dumps(manifest), flush=True)
    if "--exit" not in flags:
        sys.stdin.read()  # hold the set until the test closes our stdin or kills us
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
