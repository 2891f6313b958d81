"""Planning a shadow set, before anything is held: its volumes, providers and writers, and the checks.

Everything here may refuse the set (UsageError, UnsupportedError) at no cost: no writer has been
told anything and nothing is frozen.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from shadowvault.errors import UsageError
from shadowvault.shadow.events import WriterRun
from shadowvault.shadow.freeze_rules import check_may_freeze
from shadowvault.shadow.manifest import Shadow
from shadowvault.shadow.options import SetOptions
from shadowvault.shadow.providers import registry as providers
from shadowvault.shadow.providers.base import FreezePolicy, Provider
from shadowvault.shadow.volumes import Volume, find_volume, volume_of
from shadowvault.shadow.writers import registry as writers
from shadowvault.shadow.writers.base import Writer


def resolve_volumes(args: Sequence[str]) -> list[Volume]:
    """The mounted volumes named by `args` (mount points or paths on them), each once, in order."""
    if not args:
        raise UsageError("a shadow set needs at least one volume (--volume MOUNT_POINT)")
    volumes: list[Volume] = []
    for arg in args:
        volume = find_volume(arg)
        if volume.mount_point not in {v.mount_point for v in volumes}:
            volumes.append(volume)
    return volumes


def choose_providers(volumes: Sequence[Volume], requested: str | Provider) -> dict[str, Provider]:
    """The provider of each volume, by mount point: the one given, or the registry's choice."""
    if isinstance(requested, Provider):
        return {volume.mount_point: requested for volume in volumes}
    pool = providers.all_providers()  # one instance of each for the whole set (what it read planning)
    return {volume.mount_point: providers.choose_provider(volume, requested, pool) for volume in volumes}


def make_runs(volumes: list[Volume], options: SetOptions) -> list[WriterRun]:
    """The set's writers: those named, then (auto_writers) those found; filesystem freezers last.

    Application writers freeze first and thaw last; filesystem freezers freeze last and thaw first.
    """
    chosen: dict[str, Writer] = {}
    for spec in options.writers:
        writer = spec if isinstance(spec, Writer) else writers.make_writer(spec)
        chosen.setdefault(writer.label, writer)
    if options.auto_writers:
        writers.kept_first(writers.discover_writers(volumes), chosen)
    ordered = sorted(chosen.values(), key=lambda w: w.freezes_filesystems)
    return [WriterRun(w) for w in ordered]


def check_freeze_policies(
    runs: Sequence[WriterRun], volumes: Sequence[Volume], chosen: dict[str, Provider]
) -> None:
    """Refuse, before anything is frozen, fsfreeze on a volume whose provider forbids it, and a provider
    that freezes its volume itself (NEEDS) on a volume we must keep writing to."""
    for volume in volumes:
        provider = chosen.get(volume.mount_point)
        if provider is not None and provider.freeze_policy == FreezePolicy.NEEDS:
            try:
                check_may_freeze(volume)
            except UsageError as err:
                raise UsageError(
                    f"provider {provider.name} freezes {volume.mount_point} for its instant: {err}"
                ) from err
    for run in runs:
        if not run.is_filesystem_freezer:
            continue
        targets = [run.writer.instance] if run.writer.instance else [v.mount_point for v in volumes]
        for target in targets:
            mount = find_volume(target).mount_point
            provider = chosen.get(mount)
            if provider is not None and provider.freeze_policy == FreezePolicy.BUILT_IN:
                raise UsageError(
                    f"writer {run.label} cannot be used with provider {provider.name} on {mount}: "
                    f"{provider.name} freezes the filesystem itself while it snapshots, and cannot "
                    "snapshot one that fsfreeze holds; leave out --writer fsfreeze"
                )
            if provider is not None and provider.freeze_policy == FreezePolicy.FORBIDS:
                raise UsageError(
                    f"writer {run.label} cannot be used with provider {provider.name} on {mount}: a "
                    f"{provider.name} shadow of a frozen filesystem blocks until thaw (a deadlock); "
                    f"{provider.name} needs no fsfreeze, leave out --writer fsfreeze or use "
                    "--provider live"
                )


def freezer_targets(runs: Sequence[WriterRun], volumes: Sequence[Volume]) -> dict[str, set[str]]:
    """The mount points each filesystem freezer of the set will freeze, by writer label."""
    targets: dict[str, set[str]] = {}
    for run in runs:
        if run.is_filesystem_freezer:
            named = [run.writer.instance] if run.writer.instance else [v.mount_point for v in volumes]
            targets[run.label] = {find_volume(t).mount_point for t in named}
    return targets


def separate_instants_note(shadows: Sequence[Shadow], held: set[str]) -> str | None:
    """A note for a set whose images are each of one instant but not of one instant together.

    Only a filesystem freeze held over every volume while all commit makes them one instant (`held`:
    those volumes, and those a provider took together); btrfs and lvm cannot be combined with
    fsfreeze (planning refuses it), so theirs are taken one by one unless lvm takes them together.
    """
    atomic = [s.volume for s in shadows if s.atomic]
    if len(atomic) < 2 or all(volume in held for volume in atomic):
        return None
    return (
        f"the volumes {', '.join(atomic)} were shadowed one after another, each image of one instant "
        "but not all of them of the same one: what the set's writers hold is consistent across them, "
        "other files an application keeps in step across these volumes may be moments apart"
    )


def check_writer_volumes(
    runs: Sequence[WriterRun], volumes: Sequence[Volume], all_volumes: list[Volume]
) -> None:
    """A writer's data must lie on the set's volumes (VSS: the requester adds every volume)."""
    mounts = {v.mount_point for v in volumes}
    for run in runs:
        if run.is_filesystem_freezer:
            continue
        for component in run.report.components:
            for path in component.paths:
                if not os.path.exists(path):
                    continue
                holder = volume_of(path, all_volumes).mount_point
                if holder not in mounts:
                    raise UsageError(
                        f"writer {run.label}: {path} lies on {holder}, which is not in the shadow set "
                        f"(add --volume {holder})"
                    )
