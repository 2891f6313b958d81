"""Helpers for tests that need a stored shadow set without the coordinator: provider + store directly."""

from __future__ import annotations

import os
import socket
import subprocess
import time

from shadowvault.shadow.manifest import ShadowSetManifest
from shadowvault.shadow.providers.registry import get_provider
from shadowvault.shadow.store import ShadowStore
from shadowvault.shadow.volumes import find_volume


def make_set(
    store: ShadowStore,
    mounts: list[str],
    provider: str,
    *,
    persistent: bool = False,
    requester_pid: int | None = None,
    state: str = "created",
    created: float | None = None,
) -> ShadowSetManifest:
    """Shadow `mounts` with `provider` and store the set, as the coordinator would (without writers)."""
    set_id = store.new_id()
    chosen = get_provider(provider)
    shadows = [chosen.create(find_volume(m), set_id, i) for i, m in enumerate(mounts)]
    manifest = ShadowSetManifest(
        id=set_id,
        created=created if created is not None else time.time(),
        host=socket.gethostname(),
        state=state,
        persistent=persistent,
        requester_pid=requester_pid,
        provider=provider,
        shadows=shadows,
    )
    store.save(manifest)
    return manifest


def dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def alive_pid() -> int:
    return os.getpid()
