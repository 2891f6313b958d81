"""Path mapping: where a live path is found inside a shadow set's images."""

from __future__ import annotations

import os

from shadowvault.errors import UsageError
from shadowvault.paths_within import innermost
from shadowvault.shadow.manifest import ShadowSetManifest


def shadow_path(manifest: ShadowSetManifest, original_path: str) -> str:
    """Where the live absolute path `original_path` is found inside the set's shadows."""
    path = os.path.abspath(original_path)
    by_volume = {shadow.volume: shadow for shadow in manifest.shadows}
    mount = innermost(path, by_volume)
    if mount is None:
        raise UsageError(f"{original_path} is not on any volume of shadow set {manifest.id}")
    shadow = by_volume[mount]
    rel = os.path.relpath(path, shadow.volume)
    return shadow.path if rel == "." else os.path.join(shadow.path, rel)
