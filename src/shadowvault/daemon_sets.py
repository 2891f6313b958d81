"""Shadow sets made by `shadowvault daemon`: the ShadowSets seam (shadow/requesting.py) over the client.

What `exec`, `backup` and `shadows ...` use when a daemon answers: the daemon freezes and
snapshots, this process reads. The answers are decoded into the same manifests and exposures the
in-process coordinator returns, so every command prints the same either way. A set for a `with`
block belongs to this process's connection: if the process dies, the daemon releases the set.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import msgspec

from shadowvault.client import Client
from shadowvault.errors import NotFoundError, PartialFailure, ShadowvaultError, UsageError
from shadowvault.shadow.exposure import Exposure
from shadowvault.shadow.manifest import ShadowSetManifest
from shadowvault.shadow.options import SetOptions
from shadowvault.typed_decoding import convert

log = logging.getLogger(__name__)

Decoded = TypeVar("Decoded")


def _decode(document: Any, kind: type[Decoded], what: str) -> Decoded:
    try:
        return convert(document, kind)
    except msgspec.ValidationError as err:
        raise ShadowvaultError(f"the daemon answered with {what} this client cannot read: {err}") from None


def _manifest(document: Any) -> ShadowSetManifest:
    return _decode(document, ShadowSetManifest, "a shadow set")


def _exposures(document: Any) -> list[Exposure]:
    return _decode(document, list[Exposure], "an exposure")


def _request(options: SetOptions) -> dict[str, Any]:
    """SetOptions as the body of POST /v1/shadow-sets (writers by name: objects stay in a process)."""
    if not all(isinstance(w, str) for w in options.writers) or not isinstance(options.provider, str):
        raise UsageError("writers and providers given as objects cannot be sent to the daemon (--no-daemon)")
    body: dict[str, Any] = {
        "writers": list(options.writers),
        "provider": options.provider,
        "auto_writers": options.auto_writers,
        "freeze_timeout": options.freeze_timeout,
        "commit_timeout": options.commit_timeout,
        "backup_type": options.backup_type,
    }
    if options.scope.paths:  # what a backup reads: the daemon images no nested subvolume beyond it
        body["read_paths"] = list(options.scope.paths)
        body["left_out"] = list(options.scope.left_out)
    return body


class ThroughDaemon:
    """The daemon at `client`'s socket makes the sets; one connection for this process's requests."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @contextlib.contextmanager
    def shadow_set(
        self, volumes: Sequence[str], options: SetOptions, *, hint: str = ""
    ) -> Iterator[ShadowSetManifest]:
        body = _request(options)
        manifest = _manifest(self.client.create_shadow_set(list(volumes), persistent=False, **body))
        succeeded = False
        try:
            if os.geteuid() != 0:
                self._read_through_exposures(manifest)
            yield manifest
            succeeded = True
        finally:
            completed = _manifest(self.client.complete_shadow_set(manifest.id, succeeded))
            for name in manifest.__struct_fields__:  # the caller holds this object: update it in place
                setattr(manifest, name, getattr(completed, name))

    def _read_through_exposures(self, manifest: ShadowSetManifest) -> None:
        """A user who is not root cannot enter the shadows where the daemon made them: each is
        exposed in the user's private directory, and read there (the daemon unexposes on release)."""
        for index, shadow in enumerate(manifest.shadows):
            shadow.path = self.expose(manifest.id, str(index), None).at

    def create(self, volumes: Sequence[str], options: SetOptions) -> ShadowSetManifest:
        return _manifest(self.client.create_shadow_set(list(volumes), persistent=True, **_request(options)))

    def list_sets(
        self, on_warning: Callable[[str], None] | None = None
    ) -> list[tuple[ShadowSetManifest, list[Exposure]]]:
        listed = self.client.shadow_sets()
        # Shadows the daemon could not check now (one failing lvs can concern several sets: told once).
        for why in dict.fromkeys(why for document in listed for why in document.get("warnings", [])):
            (on_warning or log.warning)(why)
        return [(_manifest(d), _exposures(d.get("exposures", []))) for d in listed]

    def delete(self, ref: str | None = None, *, oldest: bool = False) -> list[str]:
        if ref is not None:
            return [self.client.delete_shadow_set(ref)]
        ids = [d["id"] for d in self.client.shadow_sets()]
        if oldest:
            if not ids:
                raise NotFoundError("there are no shadow sets")
            return [self.client.delete_shadow_set(ids[0])]
        deleted: list[str] = []
        failed: list[str] = []
        for set_id in ids:
            try:
                deleted.append(self.client.delete_shadow_set(set_id))
            except NotFoundError:
                continue  # released meanwhile (its requester ended)
            except ShadowvaultError as err:
                failed.append(f"{set_id}: {err}")
        if failed:
            raise PartialFailure(f"deleted {len(deleted)} shadow set(s); not deleted: " + "; ".join(failed))
        return deleted

    def expose(self, ref: str, volume: str | None, at: str | None) -> Exposure:
        if volume is not None and not volume.isdigit():  # the mount point named here, not in the daemon's cwd
            volume = os.path.abspath(volume)
        document = self.client.expose(ref, volume, at)
        return _exposures([document])[0]

    def unexpose(self, ref: str | None = None, at: str | None = None) -> list[str]:
        return self.client.unexpose(ref, at)
