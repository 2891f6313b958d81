"""The providers' side of a shadow set: commits bounded by the hard limit, and cancelled on abort.

Every commit runs in a worker thread (see events.py). Until its shadow is in the manifest a commit is
"late": an abort (a timeout, an interrupt, a failing writer) cancels it, waits briefly for it to
stop, and deletes whatever it made, so that no image outlives an aborted set.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures

from shadowvault.shadow.events import in_thread, reason
from shadowvault.shadow.manifest import Shadow
from shadowvault.shadow.providers.base import WHOLE_VOLUMES, Provider, ReadScope
from shadowvault.shadow.volumes import Volume

log = logging.getLogger(__name__)

# An abort waits this long at most for a cancelled commit to end: a btrfs snapshot ends in
# milliseconds, a cancelled reflink copy within a few files.
ABORT_COMMIT_WAIT = 5.0


class CommitFailed(Exception):
    """A provider's commit failed or passed its limit; `message` names the provider and the volume."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause


class Commits:
    """The providers' commits of one set, and the shadows they made or are still making."""

    def __init__(self, providers: dict[str, Provider]) -> None:
        self.providers = providers  # by volume mount point
        self._late: list[tuple[Provider, Future[Shadow | list[Shadow]]]] = []  # shadows not yet recorded
        self.together: set[str] = set()  # mount points whose images were taken at one instant

    def commit(
        self,
        volumes: Sequence[Volume],
        set_id: str,
        timeout: float,
        made: list[Shadow],
        scope: ReadScope = WHOLE_VOLUMES,
    ) -> None:
        """Every volume's commit, one after another, all within `timeout`; CommitFailed otherwise.

        `scope`: what the requester reads of the volumes (each provider's `create` may image no more).

        A provider that can take several of the set's volumes at one instant (lvm on Linux 6.8+)
        commits them in one call, at the first of them; their mount points go to `self.together`.
        Each shadow is appended to `made` as soon as it is returned (the abort deletes those).
        """
        deadline = time.monotonic() + timeout
        groups = self._groups(volumes)
        for index, volume in enumerate(volumes):
            provider = self.providers[volume.mount_point]
            group = groups.get(type(provider))
            if group is not None and volume is not group[0][1]:
                continue  # committed with the first volume of its group
            if group is not None:
                members = [v for _, v in group]
                future: Future[Shadow | list[Shadow]] = in_thread(
                    provider.create_together,
                    members,
                    set_id,
                    [i for i, _ in group],
                    timeout,
                    name=f"commit:{provider.name}",
                )
                where = ", ".join(v.mount_point for v in members)
            else:
                future = in_thread(
                    provider.create, volume, set_id, index, scope, name=f"commit:{provider.name}"
                )
                where = volume.mount_point
            # Until it is returned, a commit an interrupt leaves running is the abort's to clean up.
            self._late.append((provider, future))
            wait_futures([future], timeout=max(deadline - time.monotonic(), 0.001))
            if not future.done():
                raise CommitFailed(
                    f"provider {provider.name} timed out at commit on {where} after {timeout:.1f} s"
                )
            error = future.exception()
            if error is not None:
                raise CommitFailed(
                    f"provider {provider.name} failed at commit on {where}: {reason(error)}", error
                )
            made.extend(_as_list(future.result()))
            self._late.remove((provider, future))
            if group is not None:
                self.together.update(v.mount_point for _, v in group)

    def _groups(self, volumes: Sequence[Volume]) -> dict[type[Provider], list[tuple[int, Volume]]]:
        """The volumes (with their index) of each kind of provider that can commit them together."""
        by_provider: dict[type[Provider], list[tuple[int, Volume]]] = {}
        for index, volume in enumerate(volumes):
            by_provider.setdefault(type(self.providers[volume.mount_point]), []).append((index, volume))
        return {
            key: group
            for key, group in by_provider.items()
            if len(group) > 1
            and self.providers[group[0][1].mount_point].can_create_together([v for _, v in group])
        }

    def planned(self, volumes: Sequence[Volume], set_id: str) -> list[Shadow]:
        """The shadows the commits will make (the set's intent, recorded before the freeze)."""
        planned = []
        for index, volume in enumerate(volumes):
            shadow = self.providers[volume.mount_point].planned(volume, set_id, index)
            if shadow is not None:
                planned.append(shadow)
        return planned

    def delete(self, shadows: Sequence[Shadow]) -> None:
        """Delete the shadows made, then cancel and clean up the commits still running."""
        for shadow in shadows:
            provider = self.providers.get(shadow.volume)
            if provider is None:
                continue
            try:
                provider.delete(shadow)
            except Exception as err:
                log.warning("cannot delete the shadow of %s: %s", shadow.volume, err)
        self.cancel_late()

    def cancel_late(self) -> None:
        """Cancel the commits still running (interrupted, or past their limit) and delete what they make.

        Each gets ABORT_COMMIT_WAIT to stop. One still running after that is deleted when it ends, if
        this process lives that long; if not, the store's reap deletes it (the set's intent names it).
        """
        for provider, future in self._late:
            if not future.done():
                provider.cancel()
                wait_futures([future], timeout=ABORT_COMMIT_WAIT)
            if future.done():
                _delete_late(provider, future)
            else:
                future.add_done_callback(functools.partial(_delete_late, provider))
        self._late = []


def _as_list(result: Shadow | list[Shadow]) -> list[Shadow]:
    return result if isinstance(result, list) else [result]


def _delete_late(provider: Provider, future: Future[Shadow | list[Shadow]]) -> None:
    if future.exception() is None:
        for shadow in _as_list(future.result()):
            try:
                provider.delete(shadow)
            except Exception as err:
                log.warning("cannot delete a late shadow: %s", err)
