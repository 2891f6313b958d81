"""The provider registry: every provider, and the choice of the best one for a volume."""

from __future__ import annotations

from collections.abc import Sequence

from shadowvault.errors import ShadowvaultError, UnsupportedError, UsageError
from shadowvault.shadow.manifest import Shadow
from shadowvault.shadow.providers.base import Provider
from shadowvault.shadow.providers.btrfs import BtrfsProvider
from shadowvault.shadow.providers.fanotify import FanotifyProvider
from shadowvault.shadow.providers.live import LiveProvider
from shadowvault.shadow.providers.lvm import LvmProvider
from shadowvault.shadow.providers.names import AUTO
from shadowvault.shadow.providers.reflink import ReflinkProvider
from shadowvault.shadow.volumes import Volume, list_volumes

PROVIDER_CLASSES: tuple[type[Provider], ...] = (
    BtrfsProvider,
    LvmProvider,
    ReflinkProvider,
    FanotifyProvider,
    LiveProvider,
)

_NOT_ATOMIC_NOTES = {  # {volume}: the shadow's volume
    "reflink": (
        "reflink copies of {volume} are not atomic across files: data held by writers is consistent, "
        "files outside writers may be inconsistent"
    ),
    "live": (
        "live: no image is made of {volume}; its files are read after the writers resume, "
        "so nothing on it, writer data included, is consistent at one point in time"
    ),
}


def all_providers() -> list[Provider]:
    """One instance of every provider, best (highest priority) first."""
    return sorted((cls() for cls in PROVIDER_CLASSES), key=lambda p: p.priority, reverse=True)


def provider_names() -> list[str]:
    return [p.name for p in all_providers()]


def get_provider(name: str) -> Provider:
    """The provider called `name`; a UsageError listing the valid names otherwise."""
    for provider in all_providers():
        if provider.name == name:
            return provider
    valid = ", ".join([AUTO, *provider_names()])
    raise UsageError(f"unknown provider {name!r} (choose one of: {valid})")


def supported_providers(volume: Volume) -> list[str]:
    """Names of the providers that can shadow `volume`, best first."""
    return [p.name for p in all_providers() if p.is_supported(volume)]


def unsupported_reasons(volume: Volume) -> dict[str, str]:
    """For each provider that cannot shadow `volume`, why not."""
    reasons = {}
    for provider in all_providers():
        reason = provider.unsupported_reason(volume)
        if reason:
            reasons[provider.name] = reason
    return reasons


def choose_provider(
    volume: Volume, requested: str = AUTO, pool: Sequence[Provider] | None = None
) -> Provider:
    """The provider to use: the best supporting one for `auto`, else the named one if it can serve.

    Chosen among `pool` (all_providers(), best first) when given: a set's volumes share one
    instance of each provider, which keeps what it read while planning them all (lvm: the origins,
    so that its commit runs no lvs).
    """
    candidates = list(pool) if pool is not None else all_providers()
    if requested == AUTO:
        reasons = []
        for provider in candidates:
            reason = provider.unsupported_reason(volume)
            if reason is None:
                return provider
            reasons.append(reason)
        raise UnsupportedError(f"no provider can shadow {volume.mount_point}: " + "; ".join(reasons))
    provider = next((p for p in candidates if p.name == requested), None) or get_provider(requested)
    reason = provider.unsupported_reason(volume)
    if reason:
        raise UnsupportedError(reason)
    return provider


def consistency_note(shadow: Shadow) -> str | None:
    """The caveat of a shadow that is not atomic, in plain words; None for an atomic one."""
    if shadow.atomic:
        return None
    note = _NOT_ATOMIC_NOTES.get(
        shadow.provider,
        "{provider}: the shadow of {volume} is not atomic: files outside writers may be inconsistent",
    )
    return note.format(volume=shadow.volume, provider=shadow.provider)


def passed_over_notes(shadow: Shadow) -> list[str]:
    """Why each better provider made for the shadow's volume could not serve it (lvm on a logical
    volume whose group is full): a fallback the user would otherwise not see."""
    if not shadow.provider:
        return []
    try:
        served_by = get_provider(shadow.provider)
    except ShadowvaultError:
        return []
    better = [p for p in all_providers() if p.atomic and p.priority > served_by.priority]
    if not better:
        return []
    # the mount table alone (no blkid per mount, as find_volume's UUIDs would cost on every backup)
    volume = next((v for v in list_volumes(with_uuid=False) if v.mount_point == shadow.volume), None)
    if volume is None:
        return []
    reasons = [reason for p in better if (reason := p.passed_over(volume))]
    return [f"{reason} (so {shadow.provider} served it)" for reason in reasons]


def shadow_notes(shadow: Shadow) -> list[str]:
    """Everything a manifest should say about one shadow: its consistency caveat, why a better
    provider did not serve it, then its own notes."""
    note = consistency_note(shadow)
    return ([note] if note else []) + passed_over_notes(shadow) + list(shadow.notes)


def volume_report(volume: Volume) -> dict[str, object]:
    """A volume as `volumes list --json` and the daemon's `/v1/volumes` show it (one shape for both)."""
    return {
        "mount_point": volume.mount_point,
        "device": volume.device,
        "fstype": volume.fstype,
        "fs_uuid": volume.fs_uuid,
        "root": volume.root,
        "read_only": volume.read_only,
        "providers": supported_providers(volume),
        "unsupported": unsupported_reasons(volume),
    }
