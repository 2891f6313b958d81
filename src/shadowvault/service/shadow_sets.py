"""What the shadow-set endpoints do, as plain blocking calls (run in worker threads by the handlers).

The same library as `shadowvault shadows ...` in process: the coordinator (through SetRuns), the
store, the exposures. A user who is not root sees, exposes and deletes only the sets they asked for,
and exposes them only in their private directory (private_exposure.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import msgspec

from shadowvault.errors import NotFoundError, PermissionDeniedError, UsageError
from shadowvault.service import private_exposure
from shadowvault.service.peer import Peer
from shadowvault.service.policy import GroupPolicy
from shadowvault.service.request_body import absolute, parse
from shadowvault.service.set_runs import SetRuns
from shadowvault.shadow import exposure as exposing
from shadowvault.shadow import validity
from shadowvault.shadow.exposure import Exposure
from shadowvault.shadow.manifest import ShadowSetManifest
from shadowvault.shadow.options import DEFAULT_COMMIT_TIMEOUT, DEFAULT_FREEZE_TIMEOUT, SetOptions
from shadowvault.shadow.providers.base import ReadScope
from shadowvault.shadow.providers.live import is_pseudo
from shadowvault.shadow.providers.registry import volume_report
from shadowvault.shadow.store import ShadowStore, max_shadows_per_volume
from shadowvault.shadow.volumes import list_volumes
from shadowvault.shadow.writers.registry import WriterEntry, inventory

log = logging.getLogger(__name__)

BACKUP_TYPES = ("copy", "full")


class CreateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of POST /v1/shadow-sets."""

    volumes: list[str]
    writers: list[str] = []
    provider: str = "auto"
    persistent: bool = False
    auto_writers: bool = True
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT
    commit_timeout: float = DEFAULT_COMMIT_TIMEOUT
    backup_type: str = "copy"
    read_paths: list[str] = []  # what the requester reads of the volumes (SetOptions.scope)
    left_out: list[str] = []

    def __post_init__(self) -> None:
        absolute(self.volumes, "volumes")


class CompleteRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of POST /v1/shadow-sets/{id}/complete."""

    succeeded: bool


class ExposeRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of POST /v1/shadow-sets/{id}/exposures."""

    volume: str | int | None = None
    at: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.volume, int) and self.volume < 0:
            raise ValueError(f"volume: {self.volume} is not the index of a shadow (0 or more)")
        if isinstance(self.volume, str) and not self.volume.isdigit():
            absolute([self.volume], "volume")
        absolute([self.at] if self.at is not None else [], "at")


def parse_create(body: bytes) -> CreateRequest:
    if not body.strip():
        raise UsageError('the request body must be a JSON object with at least "volumes"')
    request = parse(body, CreateRequest)
    if not request.volumes:
        raise UsageError("name at least one volume")
    if request.backup_type not in BACKUP_TYPES:
        raise UsageError(f"backup_type must be one of {', '.join(BACKUP_TYPES)}")
    for path in [*request.read_paths, *request.left_out]:
        if not path.startswith("/"):
            raise UsageError(f"read_paths and left_out must be absolute paths, not {path!r}")
    return request


def volumes() -> list[dict[str, Any]]:
    """Mounted filesystems (no pseudo filesystems), as `volumes list --json` shows them."""
    return [volume_report(volume) for volume in list_volumes() if not is_pseudo(volume)]


def writers() -> list[WriterEntry]:
    """Every writer and its state, as `writers list --json` shows them."""
    return inventory()


def _refreshed(manifests: list[ShadowSetManifest], store: ShadowStore) -> list[dict[str, Any]]:
    """The sets as the API shows them, after their providers were asked whether each shadow still
    holds its point in time (validity.refresh): each with its `exposures`, and `warnings` saying
    which shadows could not be checked now (for the client to warn, as the command in process does)."""
    warnings = validity.refresh(manifests, store)
    for unchecked in warnings.values():
        for why in unchecked:
            log.warning("%s", why)
    exposures = exposing.exposures(store)
    return [
        {
            **msgspec.to_builtins(m, enc_hook=str),
            "exposures": msgspec.to_builtins([e for e in exposures if e.set_id == m.id], enc_hook=str),
            "warnings": warnings.get(m.id, []),
        }
        for m in manifests
    ]


def _check_member_limits(request: CreateRequest) -> None:
    """A member may not hold applications frozen longer than the defaults allow, and a member's set
    must fit under max_shadows_per_volume without evicting anyone's older set (the coordinator
    releases the oldest sets of a full volume to make room: root's choice, not a member's)."""
    if request.freeze_timeout > DEFAULT_FREEZE_TIMEOUT or request.commit_timeout > DEFAULT_COMMIT_TIMEOUT:
        raise PermissionDeniedError(
            f"only root may give timeouts above {DEFAULT_FREEZE_TIMEOUT:g} s (freeze) "
            f"and {DEFAULT_COMMIT_TIMEOUT:g} s (commit)"
        )
    limit = max_shadows_per_volume()
    sets = ShadowStore().list()
    for volume in request.volumes:
        mount = os.path.realpath(volume)
        holding = sum(1 for m in sets if any(s.volume == mount for s in m.shadows))
        if holding >= limit:
            raise PermissionDeniedError(
                f"{volume} already holds {holding} shadow sets, the most allowed (max_shadows_per_volume): "
                "delete one of yours, or ask root"
            )


class ShadowSetService:
    """The shadow-set calls, each for one peer under the policy."""

    def __init__(self, policy: GroupPolicy, runs: SetRuns, exposure_base: Path) -> None:
        self.policy = policy
        self.runs = runs
        self.exposure_base = exposure_base

    def _visible(self, peer: Peer, store: ShadowStore, ref: str) -> ShadowSetManifest:
        """The set `ref` names, if `peer` may see it (a set of someone else's is not there for them)."""
        if peer.uid == 0:
            return store.load(ref)
        mine = [m for m in store.list() if self.policy.may_see(peer, m.requester_uid)]
        matches = [m for m in mine if m.id == ref] or [m for m in mine if m.id.startswith(ref)]
        if len(matches) != 1:
            raise NotFoundError(f"no shadow set {ref}" if not matches else f"{ref} names several shadow sets")
        return matches[0]

    def create(self, peer: Peer, request: CreateRequest) -> ShadowSetManifest:
        self.policy.check_create(peer, request.volumes, request.writers)
        if peer.uid != 0:
            _check_member_limits(request)
        options = SetOptions(
            writers=request.writers,
            provider=request.provider,
            persistent=request.persistent,
            auto_writers=request.auto_writers,
            freeze_timeout=request.freeze_timeout,
            commit_timeout=request.commit_timeout,
            backup_type=request.backup_type,
            requester_uid=peer.uid,
            client_pid=peer.pid,
            scope=ReadScope(paths=tuple(request.read_paths), left_out=tuple(request.left_out)),
        )
        return self.runs.make(request.volumes, options)

    def list_sets(self, peer: Peer) -> list[dict[str, Any]]:
        """The sets `peer` may see, oldest first, after the sets of ended requesters are released."""
        store = ShadowStore()
        if (
            store.has_ended_requesters()
        ):  # the daemon reaped at start; its own sets end with their connections
            store.reap()
        visible = [m for m in store.list() if self.policy.may_see(peer, m.requester_uid)]
        return _refreshed(visible, store)

    def get(self, peer: Peer, ref: str) -> dict[str, Any]:
        store = ShadowStore()
        return _refreshed([self._visible(peer, store, ref)], store)[0]

    def delete(self, peer: Peer, ref: str) -> str:
        set_id = self._visible(peer, ShadowStore(), ref).id
        self.runs.release(set_id)
        return set_id

    def complete(self, peer: Peer, ref: str, succeeded: bool) -> ShadowSetManifest:
        set_id = self._visible(peer, ShadowStore(), ref).id
        return self.runs.complete(set_id, succeeded)

    def expose(self, peer: Peer, ref: str, request: ExposeRequest) -> Exposure:
        store = ShadowStore()
        manifest = self._visible(peer, store, ref)
        index, shadow = exposing.pick_shadow(manifest, request.volume)
        validity.ensure_exposable(manifest, shadow, store)
        private = private_exposure.mount_point(self.exposure_base, peer.uid, manifest.id, index)
        at = request.at
        if at is None:
            at = str(private)
        elif peer.uid != 0:
            if os.path.realpath(at) != str(private):
                raise PermissionDeniedError(
                    f"uid {peer.uid} may expose a shadow only in its private directory {private.parent}"
                )
            # Mounted where the check looked, never at the user's own path: a symlink they own could
            # point elsewhere by the time it is mounted on (a shadow over /etc).
            at = str(private)
        return exposing.expose(store, manifest.id, index, at)

    def unexpose(self, peer: Peer, ref: str | None, at: str | None) -> list[str]:
        store = ShadowStore()
        if ref is not None:
            return exposing.unexpose(store, at=at, set_id=self._visible(peer, store, ref).id)
        if at is None:
            raise UsageError("say which exposure to remove: ?at=DIR")
        target = os.path.realpath(at)
        owner = next((e.set_id for e in exposing.exposures(store) if e.at == target), None)
        if owner is None:
            raise NotFoundError(f"{target}: no shadow is exposed there")
        return exposing.unexpose(store, at=at, set_id=self._visible(peer, store, owner).id)

    def release(self, set_id: str) -> None:
        """Release a set by full id (unknown ids are no error): what a closed connection does."""
        self.runs.release(set_id)

    def release_ours(self, pid: int) -> list[str]:
        """Release every non-persistent set this daemon (`pid`) made: what a stopping daemon does."""
        released = []
        for manifest in ShadowStore().list():
            if manifest.requester_pid == pid and not manifest.persistent:
                self.runs.release(manifest.id)
                released.append(manifest.id)
        return released
