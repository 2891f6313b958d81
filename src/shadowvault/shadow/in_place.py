"""`exec --in-place`: the command reads each shadow under its volume's own path.

Other backup tools record the paths they read: through `{shadow}` restic would record
`/srv/.shadowvault/<set-id>/...`, a new path at every run, so it finds no parent and its `forget`
never groups two runs. In place, the command runs in a mount namespace of its own (`unshare
--mount`, private propagation: nothing it mounts is seen by other processes) in which each shadowed
volume's shadow is bind-mounted read-only, nosuid and nodev over the volume's mount point (outer
volumes first, so a volume inside another is bound over the shadow of the outer one; each nested
btrfs subvolume's own image over its place). Every source is opened before the first bind, since a
bind over an outer volume hides the paths of what lies inside it. `restic backup /srv` then reads
the shadow under the name `/srv`. Mounts below a volume that is not in the set are not there in the
namespace (a snapshot holds no mounts); back them up as volumes of their own.

Run as `python -m shadowvault.shadow.in_place SHADOW=VOLUME... -- COMMAND ARGS...` inside the new
namespace; it binds, then executes COMMAND in its place.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from shadowvault.shadow.manifest import ShadowSetManifest
from shadowvault.shadow.path_map import nested_images

MOUNT_TIMEOUT = 30.0


def wrapped(argv: Sequence[str], manifest: ShadowSetManifest) -> list[str]:
    """`argv` run in a private mount namespace with every shadow of `manifest` over its volume."""
    binds = [f"{shadow.path}={shadow.volume}" for shadow in manifest.shadows]
    binds += [f"{read}={live}" for shadow in manifest.shadows for live, read in nested_images(shadow).items()]
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-m",
        "shadowvault.shadow.in_place",
        *binds,
        "--",
        *argv,
    ]


def _bind_readonly(source_fd: int, target: str) -> None:
    """Bind the directory open at `source_fd` (the kernel follows /proc/self/fd/N to it, even where a
    mount now hides its path) read-only at `target`."""
    subprocess.run(
        ["mount", "--no-canonicalize", "--bind", f"/proc/self/fd/{source_fd}", target],
        check=True,
        timeout=MOUNT_TIMEOUT,
        pass_fds=[source_fd],
    )
    subprocess.run(["mount", "-o", "remount,ro,nosuid,nodev,bind", target], check=True, timeout=MOUNT_TIMEOUT)


def main(args: list[str]) -> int:
    """Bind the shadows over their volumes (outer first), then become the command."""
    if "--" not in args:
        print("shadowvault.shadow.in_place: usage: SHADOW=VOLUME... -- COMMAND ARGS...", file=sys.stderr)
        return 2
    split = args.index("--")
    binds = [pair.split("=", 1) for pair in args[:split]]
    command = args[split + 1 :]
    try:
        opened = [(os.open(source, os.O_PATH | os.O_DIRECTORY), target) for source, target in binds]
        for source_fd, target in sorted(opened, key=lambda pair: len(pair[1])):
            _bind_readonly(source_fd, target)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        print(f"shadowvault: error: cannot put the shadows in place: {err}", file=sys.stderr)
        return 1
    try:
        os.execvp(command[0], command)
    except OSError as err:
        print(f"shadowvault: error: {command[0]}: {err.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
