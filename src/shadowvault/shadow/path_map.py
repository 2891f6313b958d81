"""Path mapping: where a live path is found inside a shadow set's images."""

from __future__ import annotations

import os

from shadowvault.errors import UsageError
from shadowvault.paths_within import innermost
from shadowvault.shadow.manifest import Shadow, ShadowSetManifest


def shadow_path(manifest: ShadowSetManifest, original_path: str) -> str:
    """Where the live absolute path `original_path` is found inside the set's shadows (inside a
    nested subvolume's own image when it lies in one: providers/btrfs.py)."""
    path = os.path.abspath(original_path)
    by_volume = {shadow.volume: shadow for shadow in manifest.shadows}
    mount = innermost(path, by_volume)
    if mount is None:
        raise UsageError(f"{original_path} is not on any volume of shadow set {manifest.id}")
    shadow = by_volume[mount]
    nested = nested_images(shadow)
    holder = innermost(path, nested)
    if holder is not None:
        rel = os.path.relpath(path, holder)
        return nested[holder] if rel == "." else os.path.join(nested[holder], rel)
    rel = os.path.relpath(path, shadow.volume)
    return shadow.path if rel == "." else os.path.join(shadow.path, rel)


def nested_images(shadow: Shadow) -> dict[str, str]:
    """Live path -> where it is read, for the parts of the volume its image leaves out but that
    have images of their own (nested btrfs subvolumes)."""
    found = shadow.provider_data.get("nested_images") or {}
    return {os.path.join(shadow.volume, rel): read for rel, read in found.items()}
