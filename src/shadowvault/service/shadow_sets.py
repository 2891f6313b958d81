"""What the shadow-set endpoints do, as plain blocking calls (run in worker threads by the handlers).

These call the same library as `shadowvault shadows ...` in process: the coordinator's
`create_shadow_set` with a SetOptions, the store for list, get and delete.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shadowvault.errors import UsageError
from shadowvault.shadow import coordinator
from shadowvault.shadow import exposure as exposing
from shadowvault.shadow.manifest import ShadowSetManifest
from shadowvault.shadow.options import DEFAULT_COMMIT_TIMEOUT, DEFAULT_FREEZE_TIMEOUT, SetOptions
from shadowvault.shadow.providers.live import is_pseudo
from shadowvault.shadow.providers.registry import volume_report
from shadowvault.shadow.store import ShadowStore
from shadowvault.shadow.volumes import list_volumes
from shadowvault.shadow.writers.registry import WriterEntry, inventory


class CreateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of POST /v1/shadow-sets."""

    volumes: list[str]
    writers: list[str] = []
    provider: str = "auto"
    persistent: bool = False
    auto_writers: bool = True
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT
    commit_timeout: float = DEFAULT_COMMIT_TIMEOUT


def parse_create(body: bytes) -> CreateRequest:
    """The request, or UsageError in one line (malformed JSON, a wrong or unknown field)."""
    if not body.strip():
        raise UsageError('the request body must be a JSON object with at least "volumes"')
    try:
        request = msgspec.json.decode(body, type=CreateRequest)
    except msgspec.ValidationError as err:
        raise UsageError(f"invalid request: {err}") from None
    except msgspec.DecodeError as err:
        raise UsageError(f"malformed JSON: {err}") from None
    if not request.volumes:
        raise UsageError("name at least one volume")
    return request


def volumes() -> list[dict[str, Any]]:
    """Mounted filesystems (no pseudo filesystems), as `volumes list --json` shows them."""
    return [volume_report(volume) for volume in list_volumes() if not is_pseudo(volume)]


def writers() -> list[WriterEntry]:
    """Every writer and its state, as `writers list --json` shows them."""
    return inventory()


def create(request: CreateRequest) -> ShadowSetManifest:
    """Make the set (the coordinator takes the machine-wide lock: one freeze of a volume at a time)."""
    options = SetOptions(
        writers=request.writers,
        provider=request.provider,
        persistent=request.persistent,
        auto_writers=request.auto_writers,
        freeze_timeout=request.freeze_timeout,
        commit_timeout=request.commit_timeout,
        backup_type="copy",
    )
    return coordinator.create_shadow_set(list(request.volumes), options)


def _with_exposures(manifests: list[ShadowSetManifest], store: ShadowStore) -> list[dict[str, Any]]:
    exposures = exposing.exposures(store)
    return [
        {
            **msgspec.to_builtins(m, enc_hook=str),
            "exposures": msgspec.to_builtins([e for e in exposures if e.set_id == m.id], enc_hook=str),
        }
        for m in manifests
    ]


def list_sets() -> list[dict[str, Any]]:
    """Every set, oldest first, after the sets of ended requesters are released (as `shadows list`)."""
    store = ShadowStore()
    store.reap()
    return _with_exposures(store.list(), store)


def get_set(ref: str) -> dict[str, Any]:
    """One set by id or unique prefix."""
    store = ShadowStore()
    return _with_exposures([store.load(ref)], store)[0]


def delete_set(ref: str) -> str:
    """Release the set named by id or unique prefix; its full id."""
    store = ShadowStore()
    set_id = store.load(ref).id
    store.release(set_id)
    return set_id


def release(set_id: str) -> None:
    """Release a set by full id (unknown ids are no error): what a closed connection does."""
    ShadowStore().release(set_id)


def release_ours(pid: int) -> list[str]:
    """Release every non-persistent set this daemon (`pid`) made: what a stopping daemon does."""
    store = ShadowStore()
    released = []
    for manifest in store.list():
        if manifest.requester_pid == pid and not manifest.persistent:
            store.release(manifest.id)
            released.append(manifest.id)
    return released
